"""deploy/ names the same topics and settings as the worker.

No Docker or Kubernetes here: the files are read and compared with `worker.settings.Settings`
and `worker.topics.TopicNames`. A setting added to Settings fails these tests until it is in
deploy/compose/worker.env (or compose's `environment:`), deploy/k8s/base/worker.env and, if it
is a secret, the Secret template.

PyYAML is not a dependency, so `read_yaml` reads the block-style subset the deploy files are
written in (mappings, sequences, quoted and plain scalars, flow sequences, `{}`); it fails
loudly on anything else rather than guess.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest
from mode.services import Service
from pydantic import SecretStr

from worker.settings import Settings, files_unchecked
from worker.topics import TopicNames

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_DIR = DEPLOY / "compose"
K8S = DEPLOY / "k8s" / "base"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"

#: Autopilot's documented limit per API key (requests/s): the default of AUTOPILOT_RATE_LIMIT.
PER_KEY_RATE_LIMIT = Settings.model_fields["autopilot_rate_limit"].default
#: Ortto's smallest plan limit per key (requests/s): the default of ORTTO_RATE_LIMIT.
ORTTO_PER_KEY_RATE_LIMIT = Settings.model_fields["ortto_rate_limit"].default


# --- a reader for the YAML subset of deploy/ ---------------------------------------------------


class YamlSubsetError(ValueError):
    pass


def _strip_comment(line: str) -> str:
    quote = ""
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i].rstrip()
    return line.rstrip()


def _split_key(text: str) -> tuple[str, str] | None:
    """(key, rest) when `text` is `key: rest` or `key:`, outside quotes; else None."""
    quote = ""
    for i, char in enumerate(text):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == ":" and (i + 1 == len(text) or text[i + 1] == " "):
            return _scalar(text[:i].strip()), text[i + 1 :].strip()
    return None


def _split_flow(text: str) -> list[str]:
    items, current, quote = [], "", ""
    for char in text:
        if quote:
            current += char
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
            current += char
        elif char == ",":
            items.append(current.strip())
            current = ""
        elif char in "[]{}":
            raise YamlSubsetError(f"nested flow collections are not in the subset: {text}")
        else:
            current += char
    if current.strip():
        items.append(current.strip())
    return items


def _scalar(text: str) -> Any:
    if text == "{}":
        return {}
    if text.startswith("[") and text.endswith("]"):
        return [_scalar(item) for item in _split_flow(text[1:-1])]
    if text[:1] in "'\"":
        if len(text) < 2 or text[-1] != text[0] or "\\" in text:
            raise YamlSubsetError(f"quoted scalar outside the subset: {text}")
        return text[1:-1]
    if text[:1] in "&*!|>{":
        raise YamlSubsetError(f"anchors, tags, block scalars are not in the subset: {text}")
    if text in ("true", "false"):
        return text == "true"
    if text in ("null", "~", ""):
        return None
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    return text


def read_yaml(path: Path) -> Any:
    lines: list[tuple[int, str]] = []
    for raw in path.read_text().splitlines():
        if raw.strip() == "---":
            raise YamlSubsetError(f"{path}: one document per file")
        if "\t" in raw[: len(raw) - len(raw.lstrip())]:
            raise YamlSubsetError(f"{path}: tab indentation")
        text = _strip_comment(raw)
        if text.strip():
            lines.append((len(text) - len(text.lstrip()), text.strip()))

    def is_item(i: int) -> bool:
        return lines[i][1] == "-" or lines[i][1].startswith("- ")

    def block(i: int, indent: int) -> tuple[Any, int]:
        return sequence(i, indent) if is_item(i) else mapping(i, indent)

    def nested(i: int, indent: int, *, allow_same_indent_items: bool) -> tuple[Any, int]:
        if i < len(lines) and (
            lines[i][0] > indent
            or (allow_same_indent_items and lines[i][0] == indent and is_item(i))
        ):
            return block(i, lines[i][0])
        return None, i

    def mapping(i: int, indent: int) -> tuple[dict[Any, Any], int]:
        result: dict[Any, Any] = {}
        while i < len(lines) and lines[i][0] == indent and not is_item(i):
            split = _split_key(lines[i][1])
            if split is None:
                raise YamlSubsetError(f"{path}: not `key: value`: {lines[i][1]}")
            key, rest = split
            if key in result:
                raise YamlSubsetError(f"{path}: duplicate key {key}")
            if rest:
                result[key], i = _scalar(rest), i + 1
            else:
                result[key], i = nested(i + 1, indent, allow_same_indent_items=True)
        if i < len(lines) and lines[i][0] > indent:
            raise YamlSubsetError(f"{path}: unexpected indentation: {lines[i][1]}")
        return result, i

    def sequence(i: int, indent: int) -> tuple[list[Any], int]:
        result: list[Any] = []
        while i < len(lines) and lines[i][0] == indent and is_item(i):
            rest = lines[i][1][1:].strip()
            if not rest:
                value, i = nested(i + 1, indent, allow_same_indent_items=False)
            elif _split_key(rest) is not None and rest[:1] not in "'\"[":
                lines[i] = (indent + 2, rest)  # `- key: value` opens a mapping
                value, i = mapping(i, indent + 2)
            else:
                value, i = _scalar(rest), i + 1
            result.append(value)
        return result, i

    value, end = block(0, lines[0][0])
    if end != len(lines):
        raise YamlSubsetError(f"{path}: could not read from: {lines[end][1]}")
    return value


def test_the_yaml_reader_reads_its_subset(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text(
        "# comment\n"
        "a: 1\n"
        'b: "two: 2"  # trailing\n'
        "c:\n"
        "  - x\n"
        "  - key: v\n"
        '    other: ["p", q, 3]\n'
        "  -\n"
        "    deep: true\n"
        "d:\n"
        "- same-indent item\n"
        "e: {}\n"
        "f: PLAINTEXT://:9092,CONTROLLER://:9093\n"
        "g: 'its'\n"
    )
    assert read_yaml(path) == {
        "a": 1,
        "b": "two: 2",
        "c": ["x", {"key": "v", "other": ["p", "q", 3]}, {"deep": True}],
        "d": ["same-indent item"],
        "e": {},
        "f": "PLAINTEXT://:9092,CONTROLLER://:9093",
        "g": "its",
    }
    path.write_text("a: &anchor 1\n")
    with pytest.raises(YamlSubsetError):
        read_yaml(path)


# --- env files and settings ------------------------------------------------------------------


def _is_secret(annotation: Any) -> bool:
    if annotation is SecretStr:
        return True
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return any(_is_secret(arg) for arg in typing.get_args(annotation))
    return False


ALL_SETTINGS = {name.upper() for name in Settings.model_fields}
SECRETS = {
    name.upper() for name, field in Settings.model_fields.items() if _is_secret(field.annotation)
}
PLAIN_SETTINGS = ALL_SETTINGS - SECRETS


def read_env(path: Path) -> tuple[dict[str, str], set[str]]:
    """(NAME -> value for set lines, names of `# NAME=...` lines left unset on purpose)."""
    values: dict[str, str] = {}
    unset: set[str] = set()
    for line in path.read_text().splitlines():
        commented = re.fullmatch(r"#\s*([A-Z][A-Z0-9_]*)=.*", line.strip())
        if commented:
            unset.add(commented.group(1))
            continue
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"{path}: not NAME=value: {line!r}"
        assert name == name.strip(), f"{path}: spaces around {name!r}"
        assert not value.startswith(("'", '"')), f"{path}: {name} is quoted"
        assert name not in values, f"{path}: {name} set twice"
        values[name] = value
    return values, unset


def _settings(values: dict[str, str]) -> Settings:
    """The settings `values` make; the PEM files they name live in the cluster, not here."""
    with files_unchecked():
        return Settings.model_validate({name.lower(): value for name, value in values.items()})


def read_env_unset(path: Path) -> dict[str, str]:
    """NAME -> value of the `# NAME=value` lines of an env file (unset, shown as examples)."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        commented = re.fullmatch(r"#\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if commented:
            found[commented.group(1)] = commented.group(2)
    return found


def _interpolated_default(value: str) -> str:
    """`${NAME:-default}` as compose resolves it when NAME is not set."""
    match = re.fullmatch(r"\$\{([A-Z0-9_]+)(?::?-([^}]*))?\}", value)
    assert match, f"not a ${{VAR:-default}} interpolation: {value!r}"
    return match.group(2) or ""


DEFAULT_TOPICS = [spec.name for spec in TopicNames.from_settings(Settings()).all_specs()]


# --- compose ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document: dict[str, Any] = read_yaml(COMPOSE_DIR / "compose.yaml")
    return document


@pytest.fixture(scope="module")
def compose_settings(compose: dict[str, Any]) -> dict[str, str]:
    """Every setting the compose worker runs with: worker.env plus `environment:` defaults."""
    worker = compose["services"]["worker"]
    values: dict[str, str] = {}
    for env_file in worker["env_file"]:
        values.update(read_env(COMPOSE_DIR / env_file)[0])
    for name, value in worker["environment"].items():
        values[name] = _interpolated_default(value)
    return values


def test_compose_has_every_service(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {
        "kafka",
        "topic-init",
        "worker",
        "kafka-ui",
        "fake-autopilot",
        "fake-ortto",
    }
    assert services["kafka"]["image"] == "apache/kafka:4.1.1"
    assert services["kafka-ui"]["image"].startswith("ghcr.io/kafbat/kafka-ui:")
    assert services["fake-autopilot"]["profiles"] == ["fake"]
    assert services["fake-ortto"]["profiles"] == ["fake"]
    for name in ("kafka", "topic-init", "worker", "kafka-ui"):
        assert "profiles" not in services[name], name
    for name in ("topic-init", "worker", "fake-autopilot", "fake-ortto"):
        service = services[name]
        assert service["image"] == services["worker"]["image"]
        assert service["build"] == {"context": "../..", "dockerfile": "deploy/docker/Dockerfile"}
        assert (COMPOSE_DIR / service["build"]["context"] / "deploy/docker/Dockerfile").is_file()
    assert set(compose["volumes"]) == {"kafka-data"}


def test_compose_kafka_is_kraft_without_auto_created_topics(compose: dict[str, Any]) -> None:
    env = compose["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert len(env["CLUSTER_ID"]) == 22
    assert "kafka-data:" + env["KAFKA_LOG_DIRS"] in compose["services"]["kafka"]["volumes"]


def test_compose_names_every_setting_once(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    values, unset = read_env(COMPOSE_DIR / worker["env_file"][0])
    environment = set(worker["environment"])
    assert not set(values) & environment, "set in worker.env and shadowed by environment:"
    assert environment >= SECRETS, "secrets come from the shell, not from worker.env"
    assert not SECRETS & (set(values) | unset)
    assert set(values) | unset | environment == ALL_SETTINGS
    assert not unset & set(values)


def test_compose_settings_are_valid_and_name_the_default_topics(
    compose_settings: dict[str, str],
) -> None:
    settings = _settings(compose_settings)
    names = [spec.name for spec in TopicNames.from_settings(settings).all_specs()]
    assert names == DEFAULT_TOPICS


def test_compose_topic_init_creates_the_worker_topics(compose: dict[str, Any]) -> None:
    services = compose["services"]
    init, worker = services["topic-init"], services["worker"]
    # `python -m worker topics` creates TopicNames(settings).all_specs(), each with
    # TOPIC_PARTITIONS partitions: the same settings as the worker, so the same topics.
    assert init["command"] == ["python", "-m", "worker", "topics"]
    assert init["env_file"] == worker["env_file"]
    assert not set(init.get("environment") or {}) & {n for n in ALL_SETTINGS if "TOPIC" in n}
    assert init["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    assert init["restart"] == "no"
    assert worker["depends_on"] == {"topic-init": {"condition": "service_completed_successfully"}}


def test_compose_worker_runs_and_is_reachable(
    compose: dict[str, Any], compose_settings: dict[str, str]
) -> None:
    services = compose["services"]
    worker = services["worker"]
    port = compose_settings["WORKER_WEB_PORT"]
    assert worker["command"] == ["python", "-m", "worker", "run"]
    assert f"127.0.0.1:{port}:{port}" in worker["ports"]
    assert f"http://127.0.0.1:{port}/healthz" in " ".join(worker["healthcheck"]["test"])
    grace = int(worker["stop_grace_period"].removesuffix("s"))
    assert grace > Service.shutdown_timeout
    bootstrap = compose_settings["KAFKA_BOOTSTRAP_SERVERS"]
    kafka_env = services["kafka"]["environment"]
    assert f"PLAINTEXT://{bootstrap}" in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert services["kafka-ui"]["environment"]["KAFKA_CLUSTERS_0_BOOTSTRAPSERVERS"] == bootstrap


def test_compose_stand_in_api_is_what_the_worker_calls(
    compose: dict[str, Any], compose_settings: dict[str, str]
) -> None:
    fake = compose["services"]["fake-autopilot"]
    command = fake["command"]
    assert command[:4] == ["python", "-m", "worker", "fake-autopilot"]
    port = command[command.index("--port") + 1]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert port == "8765"
    assert compose_settings["AUTOPILOT_BASE_URL"] == f"http://fake-autopilot:{port}"
    assert (
        fake["environment"]["AUTOPILOT_API_KEY"]
        == (compose["services"]["worker"]["environment"]["AUTOPILOT_API_KEY"])
    )


def test_compose_ortto_is_off_unless_its_key_is_given(
    compose: dict[str, Any], compose_settings: dict[str, str]
) -> None:
    """Ortto's key and base URL come from the shell, empty (unset) by default: the stack serves
    Autopilot alone unless ORTTO_API_KEY is given; the stand-in is there to point them at."""
    assert compose_settings["ORTTO_API_KEY"] == ""
    assert compose_settings["ORTTO_BASE_URL"] == ""
    command = compose["services"]["fake-ortto"]["command"]
    assert command[:4] == ["python", "-m", "worker", "fake-ortto"]
    assert command[command.index("--port") + 1] == "8788"
    assert "http://fake-ortto:8788" in (COMPOSE_DIR / "compose.yaml").read_text()


# --- Kubernetes ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    document: dict[str, Any] = read_yaml(K8S / "kustomization.yaml")
    return document


@pytest.fixture(scope="module")
def resources(kustomization: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The kustomization's resources by kind."""
    by_kind: dict[str, dict[str, Any]] = {}
    for name in kustomization["resources"]:
        document = read_yaml(K8S / name)
        assert document["kind"] not in by_kind
        by_kind[document["kind"]] = document
    return by_kind


@pytest.fixture(scope="module")
def configmap_env(kustomization: dict[str, Any]) -> tuple[str, dict[str, str], set[str]]:
    (generator,) = kustomization["configMapGenerator"]
    (env_file,) = generator["envs"]
    values, unset = read_env(K8S / env_file)
    return generator["name"], values, unset


@pytest.fixture(scope="module")
def container(resources: dict[str, dict[str, Any]]) -> dict[str, Any]:
    (only,) = resources["Deployment"]["spec"]["template"]["spec"]["containers"]
    return dict(only)


def test_kustomization_resources(
    kustomization: dict[str, Any], resources: dict[str, dict[str, Any]]
) -> None:
    assert set(resources) == {
        "Deployment",
        "Service",
        "PodDisruptionBudget",
        "ScaledObject",
        "TriggerAuthentication",
    }
    assert "secret.template.yaml" not in kustomization["resources"], "would overwrite the Secret"
    (image,) = kustomization["images"]
    assert (
        image["name"]
        == resources["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"]
    )


def test_configmap_holds_every_non_secret_setting(
    configmap_env: tuple[str, dict[str, str], set[str]],
) -> None:
    _, values, unset = configmap_env
    assert set(values) | unset == PLAIN_SETTINGS
    assert not unset & set(values)
    # the SASL password is the Secret's (the ConfigMap alone would be refused without it)
    settings = _settings({**values, "KAFKA_SASL_PASSWORD": "from-the-secret"})
    names = [spec.name for spec in TopicNames.from_settings(settings).all_specs()]
    assert names == DEFAULT_TOPICS


def test_secret_template_holds_every_secret_and_no_value() -> None:
    secret = read_yaml(K8S / "secret.template.yaml")
    assert secret["kind"] == "Secret"
    assert "data" not in secret
    assert set(secret["stringData"]) == SECRETS
    assert set(secret["stringData"].values()) == {""}


def test_deployment_reads_the_configmap_and_the_secret(
    container: dict[str, Any], configmap_env: tuple[str, dict[str, str], set[str]]
) -> None:
    secret = read_yaml(K8S / "secret.template.yaml")
    sources = container["envFrom"]
    assert {"configMapRef": {"name": configmap_env[0]}} in sources
    assert {"secretRef": {"name": secret["metadata"]["name"]}} in sources
    assert "env" not in container, "settings belong in worker.env or the Secret"
    assert container["command"] == ["python", "-m", "worker", "run"]


def test_deployment_probes_and_shutdown(
    resources: dict[str, dict[str, Any]],
    container: dict[str, Any],
    configmap_env: tuple[str, dict[str, str], set[str]],
) -> None:
    (port,) = container["ports"]
    assert port["name"] == "web"
    assert str(port["containerPort"]) == configmap_env[1]["WORKER_WEB_PORT"]
    for probe, path in (
        ("startupProbe", "/healthz"),
        ("livenessProbe", "/healthz"),
        ("readinessProbe", "/readyz?check=broker,recovery"),
    ):
        assert container[probe]["httpGet"] == {"path": path, "port": "web"}, probe
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    # faust's warm shutdown gives each service up to Service.shutdown_timeout to stop
    assert pod["terminationGracePeriodSeconds"] > Service.shutdown_timeout
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    annotations = resources["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == configmap_env[1]["WORKER_WEB_PORT"]
    assert "replicas" not in resources["Deployment"]["spec"], "the ScaledObject owns it"


def test_service_pdb_and_scaler_select_the_deployment(
    resources: dict[str, dict[str, Any]],
) -> None:
    deployment = resources["Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= labels.items()
    assert resources["Service"]["spec"]["selector"] == selector
    assert resources["Service"]["spec"]["ports"][0]["targetPort"] == "web"
    pdb = resources["PodDisruptionBudget"]["spec"]
    assert pdb["selector"]["matchLabels"] == selector
    assert pdb["maxUnavailable"] == 1
    target = resources["ScaledObject"]["spec"]["scaleTargetRef"]
    assert target["name"] == deployment["metadata"]["name"]


def test_scaler_reads_the_workers_consumer_group(
    resources: dict[str, dict[str, Any]],
    configmap_env: tuple[str, dict[str, str], set[str]],
) -> None:
    spec = resources["ScaledObject"]["spec"]
    values = configmap_env[1]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    # faust's consumer group is the app id; both are read from the ConfigMap, not restated
    assert metadata["consumerGroupFromEnv"] == "WORKER_APP_ID"
    assert metadata["bootstrapServersFromEnv"] == "KAFKA_BOOTSTRAP_SERVERS"
    assert {"WORKER_APP_ID", "KAFKA_BOOTSTRAP_SERVERS"} <= set(values)
    assert "topic" not in metadata, "the lag of every topic the group reads"
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    # a replica beyond the partitions would own none, and so no share of the key's limit
    assert spec["maxReplicaCount"] <= int(values["TOPIC_PARTITIONS"])
    # the replicas share each key's limit by their partitions: each is given the whole of it
    assert float(values["AUTOPILOT_RATE_LIMIT"]) <= PER_KEY_RATE_LIMIT
    assert float(values["ORTTO_RATE_LIMIT"]) <= ORTTO_PER_KEY_RATE_LIMIT


# --- Kafka security: the worker's settings, its certificates, KEDA's connection ------------

KAFKA_TLS_SECRET = "kafka-tls.secret.template.yaml"
#: KEDA's names for KAFKA_SASL_MECHANISM's values (its kafka scaler's `sasl`)
KEDA_SASL = {
    "PLAIN": "plaintext",
    "SCRAM-SHA-256": "scram_sha256",
    "SCRAM-SHA-512": "scram_sha512",
    "OAUTHBEARER": "oauthbearer",
}
FILE_SETTINGS = ("KAFKA_SSL_CA_FILE", "KAFKA_SSL_CERT_FILE", "KAFKA_SSL_KEY_FILE")


def test_the_certificates_are_mounted_where_the_settings_look(
    resources: dict[str, dict[str, Any]],
    container: dict[str, Any],
    configmap_env: tuple[str, dict[str, str], set[str]],
) -> None:
    tls_secret = read_yaml(K8S / KAFKA_TLS_SECRET)
    assert tls_secret["kind"] == "Secret"
    assert set(tls_secret["stringData"].values()) == {""}
    pod = resources["Deployment"]["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if "secret" in v]
    assert volume["secret"]["secretName"] == tls_secret["metadata"]["name"]
    assert volume["secret"]["optional"] is True, "a publicly signed service needs no file"
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] is True
    # every PEM setting, set or shown commented out, names a key of that Secret in the mount
    values = {**read_env_unset(K8S / "worker.env"), **configmap_env[1]}
    paths = {name: Path(values[name]) for name in FILE_SETTINGS}
    assert {str(path.parent) for path in paths.values()} == {mount["mountPath"]}
    assert {path.name for path in paths.values()} == set(tls_secret["stringData"])


def test_keda_connects_to_kafka_as_the_worker_does(
    resources: dict[str, dict[str, Any]],
    configmap_env: tuple[str, dict[str, str], set[str]],
) -> None:
    values = configmap_env[1]
    (trigger,) = resources["ScaledObject"]["spec"]["triggers"]
    auth = resources["TriggerAuthentication"]
    assert trigger["authenticationRef"] == {"name": auth["metadata"]["name"]}
    protocol = values["KAFKA_SECURITY_PROTOCOL"]
    metadata = trigger["metadata"]
    assert metadata["tls"] == ("enable" if protocol in ("SSL", "SASL_SSL") else "disable")
    assert metadata["sasl"] == (
        KEDA_SASL[values["KAFKA_SASL_MECHANISM"]] if protocol.startswith("SASL_") else "none"
    )
    spec = auth["spec"]
    assert spec["env"] == [
        {"parameter": "username", "name": "KAFKA_SASL_USERNAME", "containerName": "worker"}
    ]
    secret = read_yaml(K8S / "secret.template.yaml")
    tls_secret = read_yaml(K8S / KAFKA_TLS_SECRET)
    ca_file = Path(values["KAFKA_SSL_CA_FILE"])
    assert spec["secretTargetRef"] == [
        {
            "parameter": "password",
            "name": secret["metadata"]["name"],
            "key": "KAFKA_SASL_PASSWORD",
        },
        {"parameter": "ca", "name": tls_secret["metadata"]["name"], "key": ca_file.name},
    ]
    assert "KAFKA_SASL_PASSWORD" in secret["stringData"]


def test_compose_passes_the_kafka_secrets_to_every_client(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("topic-init", "worker"):
        environment = services[name]["environment"]
        for secret in ("KAFKA_SASL_PASSWORD", "KAFKA_SSL_KEY_PASSWORD"):
            assert _interpolated_default(environment[secret]) == "", (name, secret)


# --- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile_is_multi_stage_non_root_and_runs_the_worker() -> None:
    text = DOCKERFILE.read_text()
    instructions = [
        line.split(None, 1)
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#") and line[:1] not in " \t"
    ]
    froms = [rest for op, rest in instructions if op == "FROM"]
    assert len(froms) >= 2
    assert froms[-1].endswith("AS runtime")
    (image_arg,) = [rest for op, rest in instructions if op == "ARG" and "PYTHON_IMAGE" in rest]
    assert image_arg.startswith("PYTHON_IMAGE=python:3.11")
    (user,) = [rest for op, rest in instructions if op == "USER"]
    assert user.split(":")[0] not in ("0", "root")
    assert user.split(":")[0].isdigit()
    (cmd,) = [rest for op, rest in instructions if op == "CMD"]
    assert cmd == '["python", "-m", "worker", "run"]'
    (expose,) = [rest for op, rest in instructions if op == "EXPOSE"]
    assert int(expose) == Settings.model_fields["worker_web_port"].default
    ignore = (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text().split()
    assert {"!pyproject.toml", "!worker/"} <= set(ignore)

"""`python -m worker <command>` (also the `worker` console script).

worker [run]                  the streaming worker (creates topics, then runs the agents)
map source|ortto|destination  offline mapping: one JSON line in, one JSON line out (ortto:
  [--backend autopilot|ortto]   Ortto's activity webhooks; destination --backend: which API's
                                requests, default autopilot)
topics                        create every topic and print the topic map
check                         Kafka (TLS, SASL), topics, API keys, write keys: one verdict a line
schemas [--check]             write (or check) the JSON Schemas in schemas/
fake-autopilot                the stand-in Autopilot API on loopback
fake-ortto                    the stand-in Ortto API on loopback
dlq list|show|replay          dead letters: list and filter, show one, replay via the retry topic
tail [TOPIC ...]              print records as they arrive (default: the outputs, dead letters)
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import logging
import socket
import sys

__all__ = ["EXIT_CONFIG", "main", "port_in_use", "settings_problem", "tune_gc"]

#: Exit status of a misconfigured or unstartable worker (EX_SOFTWARE, as for a FatalError).
EXIT_CONFIG = 70


def settings_problem(*, connects: bool = False) -> int | None:
    """Read the settings once; on an invalid one, print one line per variable to stderr and
    return the exit status (the commands that read settings call this first). For a command
    that `connects` to Kafka, the TLS files and the token provider must load too."""
    from worker.settings import SettingsInvalid, configuration_errors, get_settings  # noqa: PLC0415

    try:
        settings = get_settings()
    except SettingsInvalid as error:
        for line in configuration_errors(error):
            print(line, file=sys.stderr)
        return EXIT_CONFIG
    if connects:
        from worker.runtime.kafka_connection import connection_problems  # noqa: PLC0415

        problems = connection_problems(settings)
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            return EXIT_CONFIG
    return None


def port_in_use(port: int, host: str = "0.0.0.0") -> bool:  # noqa: S104  (as faust binds)
    """True when another process listens on `port` (the worker's web server binds every
    interface, as faust does by default)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as aiohttp's server
        try:
            sock.bind((host, port))
        except OSError as error:
            return error.errno == errno.EADDRINUSE
    return False


def _web_port_problem() -> int | None:
    """One line and exit 70 when WORKER_WEB_PORT is taken, before anything connects."""
    from worker.settings import get_settings  # noqa: PLC0415

    port = get_settings().worker_web_port
    if not port_in_use(port):
        return None
    print(
        f"port {port} (the worker's web server) is already in use by another process: "
        "set WORKER_WEB_PORT to a free port",
        file=sys.stderr,
    )
    return EXIT_CONFIG


def _ensure_topics() -> list[str] | None:
    """Create the topics (waiting for Kafka up to its start-up timeout); None when Kafka never
    answered, which is said in one line."""
    from worker.errors import FatalError  # noqa: PLC0415
    from worker.runtime.topic_admin import ensure_topics  # noqa: PLC0415
    from worker.settings import get_settings  # noqa: PLC0415

    try:
        return asyncio.run(ensure_topics(get_settings()))
    except FatalError as error:
        logging.getLogger("worker").critical("stopping: %s", error)
        return None


def _run_worker(loglevel: str) -> int:
    import logging.config  # noqa: PLC0415

    from worker.pipeline.logs import logging_config  # noqa: PLC0415

    problem = _web_port_problem()
    if problem is not None:
        return problem
    logging.config.dictConfig(logging_config(loglevel))
    created = _ensure_topics()
    if created is None:
        return EXIT_CONFIG
    if created:
        logging.getLogger("worker").info("created topics: %s", ", ".join(created))
    asyncio.set_event_loop(asyncio.new_event_loop())

    import faust  # noqa: PLC0415

    from worker.composition import compose  # noqa: PLC0415
    from worker.errors import FatalError  # noqa: PLC0415
    from worker.settings import get_settings  # noqa: PLC0415

    try:
        app = compose(get_settings()).app
    except FatalError as error:  # e.g. a DuckDB file another process writes
        print(f"configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG

    tune_gc()
    faust.Worker(
        app, loglevel=loglevel, quiet=True, logging_config=logging_config(loglevel)
    ).execute_from_commandline()
    return 0  # pragma: no cover  (execute_from_commandline exits)


#: Allocations between two collections of the youngest generation (CPython's default: 700).
GC_YOUNG_THRESHOLD = 20_000


def tune_gc() -> None:
    """Fewer garbage collections while the worker runs: what start-up made (modules, the app)
    is frozen out of every collection, and the youngest generation is collected every 20,000
    allocations instead of 700. A message's objects die young, so each collection finds
    nearly all of them garbage either way; the older generations keep their defaults, so
    cyclic garbage is still freed at the same pace. Measured in `make bench`: about 10 % less
    CPU an event, peak RSS the same; a full collection walks only what came after start-up,
    which had been a fifth of the warehouse loader's Python time (docs/FIGURES.md)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)


def _topics() -> int:
    from worker.pipeline.logs import KafkaClientLines  # noqa: PLC0415
    from worker.settings import get_settings  # noqa: PLC0415
    from worker.topics import TopicNames  # noqa: PLC0415

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for handler in logging.getLogger().handlers:
        handler.addFilter(KafkaClientLines())
    made = _ensure_topics()
    if made is None:
        return EXIT_CONFIG
    created = set(made)
    settings = get_settings()
    for spec in TopicNames.from_settings(settings).all_specs():
        mark = "created" if spec.name in created else "exists"
        print(f"{spec.name:50} {mark:8} {spec.role}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="worker", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command")
    run = sub.add_parser("run", help="run the streaming worker")
    run.add_argument("-l", "--loglevel", default="info")
    mapping = sub.add_parser("map", help="offline mapping of JSON lines on stdin")
    mapping.add_argument("pipeline", choices=["source", "ortto", "destination"])
    mapping.add_argument(
        "--backend",
        choices=["autopilot", "ortto"],
        default="autopilot",
        help="destination only: the API whose requests to write (default autopilot)",
    )
    sub.add_parser("topics", help="create every topic and print the topic map")
    sub.add_parser(
        "check", help="check Kafka (with TLS/SASL), the topics, the API key and the write keys"
    )
    schemas = sub.add_parser("schemas", help="write the JSON Schemas of the topic values")
    schemas.add_argument("--check", action="store_true", help="fail if schemas/ is stale")
    sub.add_parser("fake-autopilot", help="the stand-in Autopilot API", add_help=False)
    sub.add_parser("fake-ortto", help="the stand-in Ortto API", add_help=False)
    sub.add_parser("dlq", help="list, show and replay dead letters", add_help=False)
    sub.add_parser("tail", help="print records as they arrive on topics", add_help=False)

    if args[:1] == ["fake-autopilot"]:
        from worker.tools.fake_autopilot import main as fake_main  # noqa: PLC0415

        return fake_main(args[1:])
    if args[:1] == ["fake-ortto"]:
        from worker.tools.fake_ortto import main as fake_ortto_main  # noqa: PLC0415

        return fake_ortto_main(args[1:])
    if args[:1] == ["dlq"]:
        from worker.tools.dlq import main as dlq_main  # noqa: PLC0415

        return settings_problem(connects=True) or dlq_main(args[1:])
    if args[:1] == ["tail"]:
        from worker.tools.tail import main as tail_main  # noqa: PLC0415

        return settings_problem(connects=True) or tail_main(args[1:])
    if args[:1] == ["worker"]:  # faust's spelling: `python -m worker worker -l info`
        args[0] = "run"
    ns = parser.parse_args(args or ["run"])
    if ns.command in (None, "run", "map", "topics", "check"):
        problem = settings_problem(connects=ns.command != "map")
        if problem is not None:
            return problem
    if ns.command in (None, "run"):
        return _run_worker(getattr(ns, "loglevel", "info"))
    if ns.command == "map":
        from worker.tools.map import run_map  # noqa: PLC0415

        return run_map(ns.pipeline, sys.stdin.buffer, sys.stdout, backend=ns.backend)
    if ns.command == "topics":
        return _topics()
    if ns.command == "check":
        from worker.tools.check import main as check_main  # noqa: PLC0415

        return check_main()
    if ns.command == "schemas":
        from worker.tools.schemas import write_schemas  # noqa: PLC0415

        return write_schemas(check=ns.check)
    parser.error(f"unknown command {ns.command}")
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""The warehouse loader: Segment tracks (and optionally Segment calls) into Segment's table
layout, in DuckDB or PostgreSQL (`build_warehouse`)."""

"""Demo sources for the quick start: a REST API (`api`) and a SQLite historian (`sqldb`)."""

"""A task: its configuration, its lifecycle (the state machine), what it runs, its logs."""

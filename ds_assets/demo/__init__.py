"""The demo program (``make demo``): materializes the whole graph on the embedded defaults and
prints what it found, then tells the drift story. Unlike the domain packages it uses Dagster."""

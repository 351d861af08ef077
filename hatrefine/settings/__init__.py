"""What a run is asked to do: the settings dataclasses and the paper's recipes (torch-free, so the CLI starts fast)."""

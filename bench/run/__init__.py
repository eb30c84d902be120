"""Running experiments: presets, ablations, task families, the trainer, executors, interrupts, provenance."""

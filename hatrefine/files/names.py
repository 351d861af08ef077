"""The file names inside hatrefine's directories (fitted runs, generator directories, autoencoders): one constant each."""

CONFIG = "config.json"  # every directory's settings
SAMPLING = "sampling.json"  # a fitted run's test-time sampler settings
QUALITY = "quality.json"  # a fitted run's before/after record and calibration
HAT_WEIGHTS = "hat.safetensors"
PRIOR_WEIGHTS = "prior.safetensors"
MODEL_WEIGHTS = "model.safetensors"  # a generator directory's weights (an autoencoder's decoder too)
ENCODER_WEIGHTS = "encoder.safetensors"
DISCRIMINATOR_WEIGHTS = "discriminator.safetensors"
GENERATOR_DIR = "generator"  # a run's own generator directory (synthesis, hierarchical)
CHECKPOINT_DIR = "checkpoint"  # resumable training state
LOCK = ".lock"  # one writer per run directory
SAMPLES_GRID = "samples.png"
EVAL_SAMPLES = "samples.npz"  # a fitted run's before/after samples: x (refined), g (the generator's, same start), z0
TORCHSCRIPT_META = "hatrefine.json"  # inside a TorchScript archive

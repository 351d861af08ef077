"""Networks and the generator interface: residual blocks, hats, the generator adapter and the registry of specs and architectures."""

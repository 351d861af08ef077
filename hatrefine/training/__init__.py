"""Training loops: the shared loop, the Hat EBM trainer, tandem synthesis, autoencoder pretraining, latent priors."""

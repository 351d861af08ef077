"""Fitted models: the Hat EBM refiner, the latent-prior refiner, loading any run, sharing on the Hub."""

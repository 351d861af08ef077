"""Langevin: the energy, the samplers (one public step), DDLS and the other latent-space refiners."""

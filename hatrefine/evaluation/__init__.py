"""How good samples are: Inception and classifier features, FID / PRDC, calibration of T and K, OOD scores, figures."""

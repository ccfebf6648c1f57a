"""Model definitions in plain torch; module paths match the official checkpoints so weights load strictly."""

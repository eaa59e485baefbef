"""Verification: pixels -> scene graph (`scene`), and judges of outputs against the truth (`judges`)."""

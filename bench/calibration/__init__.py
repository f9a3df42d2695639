"""Fits of the simulated engine's timing profiles to published measurements (see README.md)."""

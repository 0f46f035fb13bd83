"""The model (pure): inventory objects, the immutable snapshot and the staged rollout.
Imports only the standard library."""

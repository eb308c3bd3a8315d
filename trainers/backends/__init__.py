"""Backends that move rollouts or training elsewhere: Ray workers (ray/) and OpenRLHF on Ray (openrlhf/)."""

"""Rollouts: games and tasks played by a language policy, the league, the thinking strategy."""

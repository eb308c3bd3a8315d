"""Learning: model loading, generation, rollouts, advantages, losses, learners, CLI."""

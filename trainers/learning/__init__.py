"""Learning: samples, advantages (RAE, GRPO, ...), the PPO loss, the learner, the format phase."""

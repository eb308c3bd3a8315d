"""`python -m trainers.openrlhf.train_ppo_ray [OpenRLHF flags]`: OpenRLHF 0.11.2's PPO-on-Ray entry
with the RAE estimator registered.

Every flag is OpenRLHF's own (`openrlhf.cli.train_ppo_ray`, parsed and checked by its
own statements, see `trainers.openrlhf.cli`), plus ``--algo.advantage.estimator rae``
and ``--algo.advantage.rae_alpha``. With ``rae`` the trainer actor uses
`trainers.openrlhf.experience_maker.RolePPOTrainer`; with any other estimator this is
exactly `python -m openrlhf.cli.train_ppo_ray`.
"""

from __future__ import annotations

import sys

from trainers.openrlhf.cli import run


def train(args) -> None:
    from openrlhf.cli.train_ppo_ray import train as openrlhf_train

    from trainers.openrlhf.experience_maker import install

    install(args)
    openrlhf_train(args)


def main(argv: list[str] | None = None) -> None:
    run(sys.argv[1:] if argv is None else argv, train)


if __name__ == "__main__":
    main()

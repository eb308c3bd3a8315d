"""`python -m trainers.backends.openrlhf.train_ppo_ray [OpenRLHF flags]`: OpenRLHF 0.11.2's PPO-on-Ray entry
with the RAE estimator registered.

Every flag is OpenRLHF's own (`openrlhf.cli.train_ppo_ray`, parsed and checked by its
own statements, see `trainers.backends.openrlhf.cli`), plus ``--algo.advantage.estimator rae``
and ``--algo.advantage.rae_alpha``. With ``rae`` the trainer actor uses
`trainers.backends.openrlhf.experience_maker.RolePPOTrainer`; with any other estimator this is
exactly `python -m openrlhf.cli.train_ppo_ray`.

Ray is started here, before OpenRLHF's `train()` would start it: `train()` calls
`ray.init(runtime_env={"env_vars": {...}})` with TOKENIZERS_PARALLELISM, NCCL_DEBUG and
RAY_ENABLE_ZERO_COPY_TORCH_TENSORS, and inside a submitted job whose runtime env sets any
of the same keys Ray refuses to merge the two ("Failed to merge the Job's runtime env").
`start_ray` passes only the keys the job did not set, so a job's own values (for example
NCCL_DEBUG=INFO) win, and a run started outside a job gets OpenRLHF's defaults.
"""

from __future__ import annotations

import json
import os
import sys

from trainers.backends.openrlhf.cli import run

OPENRLHF_ENV_DEFAULTS = {"TOKENIZERS_PARALLELISM": "true", "NCCL_DEBUG": "WARN", "RAY_ENABLE_ZERO_COPY_TORCH_TENSORS": "1"}
"""What `openrlhf.cli.train_ppo_ray.train` puts in the runtime env when it starts Ray itself."""
JOB_CONFIG_ENV_VAR = "RAY_JOB_CONFIG_JSON_ENV_VAR"
"""Where Ray hands a job's driver its job config (ray._private.runtime_env.constants)."""


def driver_env_vars(environ=os.environ) -> dict[str, str]:
    """OpenRLHF's env vars that the submitted job's runtime env does not already set."""
    job_config = json.loads(environ.get(JOB_CONFIG_ENV_VAR) or "{}")
    job_env_vars = (job_config.get("runtime_env") or {}).get("env_vars") or {}
    return {key: environ.get(key, default) for key, default in OPENRLHF_ENV_DEFAULTS.items() if key not in job_env_vars}


def start_ray() -> None:
    """Connect to (or start) Ray with OpenRLHF's env vars, without clashing with the job's runtime env."""
    import ray

    if not ray.is_initialized():
        env_vars = driver_env_vars()
        ray.init(runtime_env={"env_vars": env_vars} if env_vars else None)


def train(args) -> None:
    from openrlhf.cli.train_ppo_ray import train as openrlhf_train

    from trainers.backends.openrlhf.experience_maker import install

    install(args)
    start_ray()
    openrlhf_train(args)


def main(argv: list[str] | None = None) -> None:
    run(sys.argv[1:] if argv is None else argv, train)


if __name__ == "__main__":
    main()

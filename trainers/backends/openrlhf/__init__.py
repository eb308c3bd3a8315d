"""Training on GPU clusters with OpenRLHF on Ray (`backend=openrlhf`), written for openrlhf==0.11.2.

    launcher.py          python -m trainers.selfplay ... backend=openrlhf: the prompt dataset, the
                         agent file and the complete `ray job submit` command, in the run directory
    tasks.py             a dataset row as a JSON label (game or task), shared by all the pieces
    agent.py             AgentExecutor for --train.agent_func_path: self-play games (one sample per
                         seat, role in extra_logs) and SAT tasks on OpenRLHF's vLLM engines
    rae.py               RAE on OpenRLHF's Experience objects (pure functions, tested without a GPU)
    experience_maker.py  RAE wired into OpenRLHF's experience maker and PPO trainer (cluster only)
    cli.py               OpenRLHF's own train_ppo_ray parser and checks, read from its installed source
    train_ppo_ray.py     python -m trainers.backends.openrlhf.train_ppo_ray: OpenRLHF's entry with `rae` added

docs/openrlhf.md has the cluster recipe and how games, roles and RAE map onto OpenRLHF;
tests/test_cluster_rehearsal.py runs the whole job on a local Ray head (CPU stand-ins for
the GPU packages in tests/cluster_standins/).
"""

OPENRLHF_VERSION = "0.11.2"

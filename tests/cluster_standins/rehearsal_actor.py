"""The CPU stand-in for OpenRLHF 0.11.2's `PolicyModelActor` (every method of which moves
tensors to `cuda:N`), with the same Ray interface.

It is built by OpenRLHF's own `RayActorGroup` inside its placement group, and runs what
the GPU actor runs, on the CPU: OpenRLHF's `Actor` model (eager attention in place of
flash-attention) for the experience maker's log-probs, OpenRLHF's `PolicyLoss` with
`get_loss_batch_info` for the PPO update (a torch AdamW in place of DeepSpeed's), and the
weight sync to the engines through their `update_weight_cuda_ipc`, which OpenRLHF's
`WorkerWrap` answers, with the tensor itself in place of a CUDA IPC handle.

Every batch it is handed, every update and every sync is appended to $REHEARSAL_LOG as
a JSON line: what the rehearsal asserts on.
"""

from __future__ import annotations

import os

import ray
import torch
from openrlhf.models import Actor, PolicyLoss
from openrlhf.trainer.ray.launcher import BaseModelActor
from openrlhf.utils.loss_utils import get_loss_batch_info

import cpu_cuda
from vllm import log_event, weights_checksum

cpu_cuda.install()


def _experience_record(experience) -> dict:
    """What the update was handed, per sample: dataset label, seat, copy, turns, reward, advantage."""
    info = experience.info
    advantages = experience.advantages
    mask = experience.action_mask.bool()
    return {
        "labels": list(experience.labels),
        "role": [int(v) for v in info["role"]],
        "copy": [int(v) for v in info["copy"]],
        "turns": [int(v) for v in info["turns"]],
        "reward": [float(v) for v in experience.rewards],
        # the advantage of a sample: its value on the first answer token (the same on every one)
        "advantage": [float(advantages[i][mask[i]][0]) if mask[i].any() else 0.0 for i in range(len(mask))],
        "action_tokens": [int(m.sum()) for m in mask],
    }


@ray.remote(num_gpus=1)
class PolicyModelActor(BaseModelActor):
    def init_model_from_pretrained(self, strategy, pretrain, max_steps=None, vllm_engines=None):
        torch.set_num_threads(1)
        self.strategy = strategy
        self.args = args = strategy.args
        self.vllm_engines = vllm_engines
        self.checkpoint_states = {}
        self.actor = Actor(pretrain, attn_implementation="eager", param_dtype=args.ds.param_dtype,
                           temperature=args.rollout.temperature)
        adam = args.actor.adam
        self.optimizer = torch.optim.AdamW(self.actor.parameters(), lr=adam.lr, betas=tuple(adam.betas),
                                           eps=adam.eps, weight_decay=adam.weight_decay)
        self.loss_fn = PolicyLoss(
            clip_eps_low=args.actor.eps_clip_low_high[0],
            clip_eps_high=args.actor.eps_clip_low_high[1],
            dual_clip=args.actor.dual_clip,
            token_level_loss=args.actor.loss_agg_mode == "token-mean",
            policy_loss_type=args.actor.policy_loss_type,
        )
        self.buffer = []
        log_event("actor_ready", model=pretrain, max_steps=max_steps, checksum=weights_checksum(self.actor.model))

    def forward(self, sequences, action_mask=None, attention_mask=None, return_output=False,
                packed_seq_lens=None, mm_train_inputs_list=None):
        with torch.no_grad():
            log_probs = self.actor(sequences, action_mask, attention_mask)
        log_event("forward", samples=len(sequences))
        return log_probs.float()

    def append(self, experience):
        self.buffer.append(experience)
        log_event("append", **_experience_record(experience))

    def fit(self, kl_ctl: float = 0):
        self.actor.train()
        losses = []
        for _ in range(self.args.train.max_epochs):
            for experience in self.buffer:
                log_probs = self.actor(experience.sequences, experience.action_mask, experience.attention_mask)
                loss, *_ = self.loss_fn(
                    log_probs.float(), experience.action_log_probs.float(), experience.advantages.float(),
                    action_mask=experience.action_mask, rollout_log_probs=experience.rollout_log_probs,
                    **get_loss_batch_info(self.strategy, experience.action_mask),
                )
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.actor.parameters(), self.args.actor.max_norm)
                self.optimizer.step()
                self.optimizer.zero_grad()
                losses.append(float(loss))
        self.buffer = []
        log_event("fit", losses=losses, checksum=weights_checksum(self.actor.model))
        return {"policy_loss": sum(losses) / max(len(losses), 1), "actor_lr": self.optimizer.param_groups[0]["lr"]}

    def broadcast_to_vllm(self):
        named = list(self.actor.model.named_parameters())
        for count, (name, param) in enumerate(named, 1):
            handles = {cpu_cuda.CPU_DEVICE_UUID: cpu_cuda.ipc_handle(param.detach().clone())}
            ray.get([engine.update_weight_cuda_ipc.remote(name, dtype=param.dtype, shape=param.shape,
                                                          ipc_handles=handles, empty_cache=count == len(named))
                     for engine in self.vllm_engines])
        log_event("broadcast", parameters=len(named), checksum=weights_checksum(self.actor.model))

    def get_checkpoint_states(self):
        return self.checkpoint_states

    def reload_states(self):
        return None

    def offload_states(self):
        return None

    def empty_cache(self):
        return None

    def save_checkpoint(self, tag, client_states=None, metric_value=None, metric_key=None):
        path = os.path.join(self.args.ckpt.path, "_actor", tag)
        os.makedirs(path, exist_ok=True)
        torch.save({"model": self.actor.model.state_dict(), "client_states": client_states}, os.path.join(path, "state.pt"))
        log_event("save_checkpoint", tag=tag, client_states=sorted(client_states or {}))

    def save_model(self):
        self.actor.model.save_pretrained(self.args.ckpt.output_dir)
        log_event("save_model", path=self.args.ckpt.output_dir)

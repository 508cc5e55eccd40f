"""``studio.trainer`` whose optimizer blows up: from the step named by DIVERGE_AT on, each update leaves NaN in the
weights it trains, as a learning rate far too high does to a real model. On the tiny demo model no allowed setting
diverges reliably (LoRA on a frozen base, clipped gradients and Adam's bounded steps keep it finite), so the fault
is forced here, at the edge, and the trainer's own detection, checkpoint veto and result are what is tested."""

import os
import sys

import torch

from studio import trainer

AT = int(os.environ["DIVERGE_AT"])
original = torch.optim.AdamW.step
steps = 0


def exploding_step(self: torch.optim.AdamW, *args: object, **kwargs: object) -> object:
    global steps
    out = original(self, *args, **kwargs)  # type: ignore[arg-type]
    steps += 1
    if steps >= AT:
        with torch.no_grad():
            for group in self.param_groups:
                for param in group["params"]:
                    param.fill_(float("nan"))
    return out


torch.optim.AdamW.step = exploding_step  # type: ignore[method-assign,assignment]
sys.exit(trainer.main())

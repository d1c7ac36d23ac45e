"""huvi: few-shot preference fine-tuning (motion LoRA, then Diffusion-DPO LoRA) of a text-to-video model."""

import logging

__version__ = "0.1.0"

# peft imports bitsandbytes, which at import tries to fetch optional CPU kernels from the Hub through
# the `kernels` package and warns, twice, in every process when it cannot (offline, untrusted repo).
# huvi uses none of those kernels; bitsandbytes' other warnings stay.
for _name in ("kernels", "bitsandbytes.backends.cpu.ops"):
    logging.getLogger(_name).setLevel(logging.ERROR)

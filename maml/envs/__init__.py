"""Meta-RL environments; importing this package registers them with gymnasium.

``gymnasium.make("maml-bench/HalfCheetahDir-v0")`` (after ``import maml.envs``, or
``gymnasium.make("maml.envs:maml-bench/HalfCheetahDir-v0")``) gives one HalfCheetahDir simulation with
garage's 100-step time limit; :class:`HalfCheetahDirBatch` is the batched form the sampler uses.
"""

from gymnasium.envs.registration import register, registry

from maml.envs.half_cheetah_dir import (
    ACT_DIM,
    EPISODE_LENGTH,
    OBS_DIM,
    HalfCheetahDirBatch,
    HalfCheetahDirConfig,
    HalfCheetahDirEnv,
    sample_directions,
)

HALF_CHEETAH_DIR_ID = "maml-bench/HalfCheetahDir-v0"

if HALF_CHEETAH_DIR_ID not in registry:
    register(
        id=HALF_CHEETAH_DIR_ID,
        entry_point="maml.envs.half_cheetah_dir:HalfCheetahDirEnv",
        max_episode_steps=EPISODE_LENGTH,
    )

__all__ = [
    "ACT_DIM",
    "EPISODE_LENGTH",
    "HALF_CHEETAH_DIR_ID",
    "OBS_DIM",
    "HalfCheetahDirBatch",
    "HalfCheetahDirConfig",
    "HalfCheetahDirEnv",
    "sample_directions",
]

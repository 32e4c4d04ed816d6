"""The defaults that robquant's study schema, command line and handlers share, each written once.

Budgets are in /255 units where a user writes them and in [0, 1] below the study schema and the
CLI parser, which convert them.
"""

from __future__ import annotations

ATTACK_STEPS = 20  # PGD and transfer steps (the paper's PGD-20)
RESTARTS = 1  # PGD random restarts
CHECK_EXAMPLES = 200  # test examples of the trust checks and of a deployed model's evaluation
CHECK_SQUARE_QUERIES = 1000  # Square's queries per example in the trust checks and a study's deployed evaluation
COLLAPSE_EPS_255 = 64  # the trust checks: the budget (/255) by which accuracy must have collapsed
CHECK_TOL = 0.01  # the trust checks' and the deployed check's tolerance (a fraction: one accuracy point)
SQUARE_QUERIES = 5000  # Square's own default (AutoAttack's standard), `robquant attack --attack square`
DEPLOYED_SQUARE_QUERIES = 200  # `robquant attack model.onnx`: Square on the runtime and the reference, per eps
BITFLIP_METHODS = ("search", "random")  # the bit-flip attack's methods: progressive bit search, random flips
BITFLIP_ATTACK_BATCH = 128  # the bit search's examples (Rakin et al.'s batch)
BITFLIP_SEARCH_CAP = 100  # flips the bit search may make
BITFLIP_RANDOM_CAP = 2000  # flips the random baseline may make
BITFLIP_REPEATS = 3  # attack batches (and random draws) per model, each a run of every method
BITFLIP_N_MAX = 1000  # a study's bit-flip accuracy is judged on at most this many test examples
BIT_ERROR_RATES = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2)  # random bit errors: two rates per decade
BIT_ERROR_DRAWS = 5  # random bit errors: independent draws of the flipped bits per rate
# what the estimate assumes of a run it has not yet seen (robquant.pipeline.estimate)
ASSUMED_ACCURACY = 0.7  # share of test examples classified correctly (the ones attacked)
ASSUMED_SURVIVAL = 0.5  # share of attacked examples an attack leaves robust
ASSUMED_SEARCH_FLIPS = 30  # flips the bit search makes to break a model (CIFAR-10 ResNet-20: 10-48 measured)
N_BOOT = 2000  # bootstrap draws of the trend labels
OPSET = 17  # the ONNX opset of an export
OPSETS = (13, 14, 15, 16, 17, 18, 19, 20)  # per-channel QDQ from 13; torch's TorchScript exporter writes up to 20

# training recipes (robquant.train: TrainConfig, PGDATConfig, QAT_FINETUNE); /255 where a user writes budgets
EPOCHS = 200  # the paper's FP schedule (and QAT from random parameters)
BATCH_SIZE = 128
LR = 0.1
WEIGHT_DECAY = 1e-4
QAT_EPOCHS = 60  # QAT fine-tuning from trained FP parameters (the paper's)
QAT_LR = 0.01
PGD_AT_EPS_255 = 8  # PGD adversarial training: budget, step (/255) and steps (the paper's PGD-7)
PGD_AT_STEP_255 = 2
PGD_AT_STEPS = 7
# quantization (robquant.quant: PTQConfig, QATConfig)
CALIB_IMAGES = 512  # training images that calibrate activation ranges (and QAT's PACT alpha)
CALIB_BATCH_SIZE = 4  # images per calibration batch (PWLQ's)
PACT_ALPHA = 10.0  # PACT's clipping level when fixed (PACT's from-scratch value)
PACT_PERCENTILE = 99.9  # the data percentile PACT's alpha starts from

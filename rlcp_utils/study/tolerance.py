"""How far two machines' results of the same code may differ, per precision: one number for `make verify`
(study/verify.py) and for the notebooks that measure a quantity another notebook recorded (10_unlearning_checks).

Its own module, importing nothing, so that a notebook that reads it does not take the verify command's code (and
the pipeline's) into its code closure.
"""

# Largest difference accepted, per precision, on any record value and on the share of per-prompt decisions that
# differ. bf16 rounds every matmul input to 8 bits of mantissa: a machine with other kernels may flip a prompt
# whose answer sits at the decision boundary (one prompt of 45 held-out ones is 0.022).
TOLERANCE = {"fp32": 0.02, "bf16": 0.05}

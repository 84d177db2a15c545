"""Tools beside the stages: ``rlhf analyze`` (layer linearity of a model), ``rlhf bench`` (PPO and ZeRO
measurements) and ``rlhf label`` (human preference sheets). They read stage outputs and never write into a stage's
run directory."""

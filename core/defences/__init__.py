"""Guards a user puts around a network: input transformations (bit depth, median filter, JPEG), the
defended pipeline with its plain or adaptive (BPDA) gradient, and the adversarially trained twins
(`transforms`). Whether a guard holds is judged in core.evaluation.defences."""

"""Guards a user puts around a network and whether they hold: input transformations under plain and
adaptive (BPDA) attacks beside adversarially trained twins (`transforms`)."""

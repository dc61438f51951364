"""--step: the flag of the launchers that read one checkpoint (eval, plot, sample), defined
once so they can be imported into one process (tests, notebooks)."""

from absl import flags

flags.DEFINE_integer("step", None, "Checkpoint step to read (default: the newest readable one; "
                     "a damaged step is an error naming the readable ones).")

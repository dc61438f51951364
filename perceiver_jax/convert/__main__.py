"""Convert a transformers or krasserm/perceiver-io Perceiver checkpoint directory into a
perceiver_jax pretrained model.

  python -m perceiver_jax.convert --transformers DIR --output OUT
  python -m perceiver_jax.convert --krasserm DIR --output OUT

Exactly one of --transformers and --krasserm names the checkpoint. OUT then holds the model
config and an Orbax checkpoint of its variables (`perceiver_jax.convert.pretrained`):
`perceiver_jax.load_pretrained(OUT)` loads it, and `--config.init_from=OUT` fine-tunes or
evaluates from it (experiments/train.py, eval.py).
"""

from absl import app, flags

from perceiver_jax.convert import pretrained
from perceiver_jax.convert import convert, convert_krasserm
from perceiver_jax.nn.model_stats import count_params

flags.DEFINE_string("transformers", None, "A transformers checkpoint directory (config.json + "
                    "model.safetensors or pytorch_model.bin), e.g. a local copy of "
                    "deepmind/vision-perceiver-conv.")
flags.DEFINE_string("krasserm", None, "A krasserm/perceiver-io checkpoint directory (config.json "
                    "with model_type and model_config + model.safetensors or pytorch_model.bin), "
                    "e.g. a local copy of krasserm/perceiver-io-mlm.")
flags.DEFINE_string("output", None, "Directory to write the perceiver_jax model to.")
flags.mark_flags_as_required(["output"])
flags.mark_flags_as_mutual_exclusive(["transformers", "krasserm"], required=True)
FLAGS = flags.FLAGS


def main(argv):
  del argv
  source = FLAGS.transformers or FLAGS.krasserm
  model_config, variables = (convert(source) if FLAGS.transformers
                             else convert_krasserm(source))
  pretrained.save_pretrained(FLAGS.output, model_config, variables)
  print(f"Wrote the {model_config.task} model ({count_params(variables['params']):,} "
        f"parameters) converted from {source} to {FLAGS.output}.")


if __name__ == "__main__":
  app.run(main)

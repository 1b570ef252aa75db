"""Generation tokens/s with and without the KV cache (same model, prompts and loop).

With the cache, N new tokens cost one prefill plus N single-token steps; without it each
step re-runs the full forward pass over the whole buffer, so its cost grows with the
length. Run: python benchmarks/generation_cache.py [--preset gpt2-tiny] [--new-tokens 128]
"""

import argparse
import time

import jax
import jax.numpy as jnp

from lmscale.models import GPT, ModelConfig, preset
from lmscale.parallel.mesh import make_mesh
from lmscale.tasks.generate import Generator


class _Ids:
    eot_id = None


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", default="gpt2-tiny")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    args = parser.parse_args()
    config = ModelConfig.from_dict(preset(args.preset, dropout=0.0))
    model = GPT(config)
    params = jax.jit(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32)))()
    generator = Generator(model, params["params"], _Ids(),
                          make_mesh({"data": 1}, jax.devices()[:1]))
    prompts = [[(7 * i + j) % config.vocab_size for j in range(args.prompt_tokens)]
               for i in range(args.batch)]
    print(f"{args.preset}: batch {args.batch}, prompt {args.prompt_tokens} tokens, "
          f"{args.new_tokens} new tokens, {jax.devices()[0].platform}")
    for use_cache in (True, False):
        generator.generate_ids(prompts, args.new_tokens, use_cache=use_cache)  # compile
        start = time.perf_counter()
        generator.generate_ids(prompts, args.new_tokens, use_cache=use_cache)
        seconds = time.perf_counter() - start
        print(f"  {'with' if use_cache else 'without'} cache: "
              f"{args.batch * args.new_tokens / seconds:,.0f} tokens/s ({seconds:.2f} s)")


if __name__ == "__main__":
    main()

"""`audiopalm train RECIPE --config NAME_OR_PATH [key=value ...] [--resume | --overwrite] [--print-config]`.

RECIPE is one of pretrain_text, finetune_audiopalm, finetune_speech_llama, train_acoustic; NAME is a shipped config
(`audiopalm train --list`) or a YAML file. One process here; several through accelerate:

    accelerate launch --config_file "$(audiopalm train --list-accelerate cpu)" -m audiopalm.recipes.RECIPE --config ...
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from audiopalm.recipes import RECIPES

    parser.add_argument("--list", action="store_true", help="list the recipes, shipped configs and accelerate configs")
    parser.add_argument("--list-accelerate", metavar="NAME", help="print the path of a shipped accelerate config")
    parser.add_argument("recipe", nargs="?", choices=sorted(RECIPES), help="the recipe to run")
    parser.add_argument(
        "args",
        nargs=argparse.REMAINDER,
        help="--config NAME_OR_PATH [key=value ...] [--resume] [--overwrite] [--print-config]; "
        "`audiopalm train RECIPE --help` for the recipe's options",
    )


def run(args: argparse.Namespace) -> int:
    import sys

    from audiopalm.config import shipped_configs
    from audiopalm.recipes import ACCELERATE_DIR, CONFIG_DIR, RECIPES, recipe_class

    if args.list:
        print("recipes: " + ", ".join(RECIPES))
        print(f"configs ({CONFIG_DIR}): " + ", ".join(shipped_configs()))
        print(
            f"accelerate configs ({ACCELERATE_DIR}): "
            + ", ".join(sorted(p.stem for p in ACCELERATE_DIR.glob("*.yaml")))
        )
        return 0
    if args.list_accelerate:
        path = ACCELERATE_DIR / f"{args.list_accelerate}.yaml"
        if not path.is_file():
            print(
                f"error: --list-accelerate {args.list_accelerate}: no such accelerate config; shipped: "
                + ", ".join(sorted(p.stem for p in ACCELERATE_DIR.glob("*.yaml"))),
                file=sys.stderr,
            )
            return 2
        print(path)
        return 0
    if args.recipe is None:
        print("error: give a recipe (" + ", ".join(RECIPES) + ") or --list", file=sys.stderr)
        return 2
    return recipe_class(args.recipe).main(args.args)

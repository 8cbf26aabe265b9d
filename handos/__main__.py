"""`python -m handos VERB ...` / `handos VERB ...`: dispatch to the verb's module, print errors cleanly."""
from __future__ import annotations

import importlib
import sys

# verb -> (module, function, one-line help); each module owns its argparse and imports lazily.
VERBS: dict[str, tuple[str, str, str]] = {
    "predict": ("handos.cli.predict", "main", "run the model on images, folders, manifests or clips"),
    "eval": ("handos.cli.eval", "main", "evaluate on an annotation file (derived_annotations.json)"),
    "bench": ("handos.cli.bench", "main", "measure latency and throughput"),
    "train": ("handos.cli.train", "main", "train the decoder from a config"),
    "label": ("annotate.cli", "main", "push predictions into Label Studio as pre-annotations"),  # imported only when run
    "hand": ("handos.cli.hand", "main", "export the hand model in a pose (OBJ/PNG)"),
}


def usage() -> str:
    """The top-level help text."""
    lines = ["usage: handos VERB [options]   (python -m handos VERB --help for a verb's options)", "", "verbs:"]
    lines += [f"  {verb:<8} {help_}" for verb, (_, _, help_) in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point: run a verb and turn HandosError into a one-line message with exit code 2."""
    from handos.errors import HandosError

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"handos: unknown verb {verb!r}; one of: {', '.join(VERBS)}", file=sys.stderr)
        return 2
    module_name, func_name, _ = VERBS[verb]
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(rest) or 0)
    except HandosError as err:
        print(f"handos {verb}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"handos {verb}: interrupted; results written so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

"""`python -m handos label INPUT... --ls-url URL --project NAME [--create]`: pre-label in Label Studio.

INPUT may be images, folders, manifests, or prediction files from `handos predict` (a .jsonl file or
a folder of JSONL/Parquet shards). Images without predictions are run through the model first;
those predictions are saved under --state as they come, so a failure loses nothing and a re-run
continues. `--export OUT.json` goes the other way: the project's labels -> a training file.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import urllib.parse
from pathlib import Path
from typing import Any

from handos.errors import InputError
from handos.foundation import RECALL_MODES, RUNTIME_HELP, RUNTIMES


def build_parser() -> argparse.ArgumentParser:
    """The label verb's options."""
    p = argparse.ArgumentParser(
        prog="handos label",
        description="Push handos predictions into Label Studio as pre-annotations (token from $LABEL_STUDIO_API_KEY), "
                    "or export the corrected labels as a training file.")
    p.add_argument("inputs", nargs="*", help="images, folders, manifests, or prediction JSONL files / shard folders")
    p.add_argument("--ls-url", default=os.environ.get("LABEL_STUDIO_URL"),
                   help="Label Studio base URL, e.g. http://localhost:8080 (default $LABEL_STUDIO_URL)")
    p.add_argument("--project", default=None, help="project title (3+ characters) or numeric id")
    p.add_argument("--create", action="store_true", help="create the project with the hands labeling config if absent")
    p.add_argument("--batch-size", type=int, default=50, help="tasks per import request")
    p.add_argument("--local-files", action="store_true",
                   help="reference images through Label Studio's local-files storage instead of uploading them "
                        "(the server must run with LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true)")
    p.add_argument("--local-files-root", default=os.environ.get("LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT"),
                   help="the server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT (default: that env var)")
    p.add_argument("--image-root", default=None, help="folder the `file` paths of prediction files are relative to")
    p.add_argument("--state", default=None, help="folder for local predictions and upload progress "
                                                "(default .handos-label/<server>-<project>)")
    p.add_argument("--weights", default=None, help="decoder weights for images without predictions")
    p.add_argument("--device", default="auto")
    p.add_argument("--predict-batch-size", type=int, default=8, help="images per model batch")
    p.add_argument("--workers", type=int, default=2, help="image decode threads for the model")
    p.add_argument("--recall", choices=RECALL_MODES, default="fast",
                   help="detector effort for images without predictions (search: multi-scale, ~10x slower, finds "
                        "more hands on hard images)")
    p.add_argument("--runtime", choices=RUNTIMES, default=None,
                   help=RUNTIME_HELP + "; for images without predictions")
    p.add_argument("--export", metavar="OUT.json", default=None,
                   help="instead of pushing: write the project's labels as a COCO-WholeBody-hand-style training file")
    p.add_argument("--eval-out", default=None, help="with --export: also write handos eval annotations (derived_annotations.json format)")
    p.add_argument("--raw-out", default=None, help="with --export: also keep Label Studio's raw JSON export")
    p.add_argument("--from-file", metavar="LS_EXPORT.json", default=None,
                   help="with --export: convert a JSON export downloaded from Label Studio (no server needed)")
    p.add_argument("--include-predictions", action="store_true",
                   help="with --export: use the model's prediction for tasks nobody has annotated yet")
    p.add_argument("--root", default=None,
                   help="with --export: write image file names relative to this folder (default: absolute paths)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def slug(text: str) -> str:
    """A file-name-safe form of `text`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_")[:60] or "x"


def is_prediction_file(path: Path) -> bool:
    """True when the file's first record is a handos.prediction/1 object (else a manifest)."""
    from handos.io.schema import SCHEMA

    if path.suffix == ".parquet":
        return True
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise InputError(f"{path}: first line is not JSON; expected handos predictions or a manifest") from None
                return isinstance(row, dict) and row.get("schema") == SCHEMA
    return False


def resolve_image(file: str, sources: list[Path], image_root: str | None) -> Path | None:
    """Where the image a record names lies: --image-root, as given, or next to its prediction file."""
    cands = [Path(image_root) / file] if image_root else []
    cands += [Path(file)] + [s / file for s in sources]
    return next((c for c in cands if c.is_file()), None)


def gather(inputs: list[str], image_root: str | None) -> tuple[list[tuple[dict, Path]], list[Any]]:
    """Split INPUTs into (record, image path) pairs from prediction files and image work items to predict."""
    from handos.io.manifest import expand_inputs
    from handos.io.records import read_records
    from handos.io.schema import validate_record

    predicted: list[tuple[dict, Path]] = []
    to_predict: list[Any] = []
    missing: list[str] = []
    for raw in inputs:
        p = Path(raw)
        shards = p.is_dir() and (any(p.glob("preds-*.jsonl")) or any(p.glob("preds-*.parquet")))
        if shards or (p.is_file() and p.suffix in (".jsonl", ".parquet") and is_prediction_file(p)):
            base = p if p.is_dir() else p.parent
            for rec in read_records(p):
                if not isinstance(rec, dict) or "schema" not in rec:
                    continue
                validate_record(rec)
                img = resolve_image(str(rec["file"]), [base, base.parent], image_root)
                if img is None:
                    missing.append(str(rec["file"]))
                else:
                    predicted.append((rec, img))
        else:
            to_predict += [it for it in expand_inputs([raw]) if not it.is_video]
    if missing:
        raise InputError(f"{len(missing)} image(s) named in the prediction files were not found (first: {missing[0]}); "
                         "pass --image-root FOLDER")
    return predicted, to_predict


def predict_missing(items: list[Any], state: Path, weights: str | None, device: str, quiet: bool,
                    batch_size: int = 8, workers: int = 2, recall: str = "fast",
                    runtime: str | None = None) -> list[tuple[dict, Path]]:
    """Run the model on images not yet predicted (batched, decode pool; saved to STATE/predictions.jsonl as they come)."""
    from tqdm import tqdm

    from handos.batch.runner import run_images
    from handos.io.records import RecordWriter, read_records

    out = state / "predictions.jsonl"
    writer = RecordWriter(str(out), resume=True)
    todo = [it for it in items if it.file not in writer.done]
    if todo:
        import handos

        model = handos.load(weights=weights, device=device, recall=recall, runtime=runtime)
        try:
            with tqdm(total=len(todo), unit="img", desc="predict", disable=quiet, dynamic_ncols=True) as bar:
                summary = run_images(model, items, writer, batch_size=batch_size, workers=workers, progress=bar.update)
        finally:
            writer.close()
        if summary.failed:
            print(f"handos label: {summary.failed} image(s) could not be read (first: {summary.errors[0]}); "
                  f"listed in {writer.errors_path}", file=sys.stderr)
    by_file = {it.file: Path(it.path) for it in items}
    return [(r, by_file[r["file"]]) for r in read_records(out) if isinstance(r, dict) and r.get("file") in by_file]


def default_state(ls_url: str, project: str) -> Path:
    """.handos-label/<host_port>-<project> in the working folder."""
    netloc = urllib.parse.urlsplit(ls_url).netloc
    return Path(".handos-label") / f"{slug(netloc)}-{slug(str(project))}"


def read_export(path: str) -> list[dict]:
    """A Label Studio JSON export file (a list of tasks)."""
    try:
        tasks = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read Label Studio export {path}: {err}") from None
    if not isinstance(tasks, list):
        raise InputError(f"{path} is not a Label Studio JSON export (expected a list of tasks; export as JSON, not JSON_MIN)")
    return tasks


def run_export(args: argparse.Namespace, tasks: list[dict], fetch: Any = None) -> int:
    """--export: exported tasks -> COCO-style training file (+ eval annotations, + raw export)."""
    from annotate import convert

    coco = convert.export_to_coco(tasks, use_predictions=args.include_predictions, root=args.root,
                                  local_root=args.local_files_root, fetch=fetch)
    write_json(args.export, coco)
    if args.eval_out:
        write_json(args.eval_out, convert.coco_to_eval(coco))
    if args.raw_out:
        write_json(args.raw_out, tasks)
    st = coco["stats"]
    print(f"handos label: exported {st['images']} images, {st['hands']} hands from {st['tasks']} tasks "
          f"({st['skipped_unlabelled']} not yet labelled, {st['skipped']} skipped) -> {args.export}", file=sys.stderr)
    if st["unsized"] or st["no_local_file"]:
        print(f"handos label: {st['unsized']} images of unknown size were left out; {st['no_local_file']} images exist only "
              "on Label Studio (file_name null, image_url kept)", file=sys.stderr)
    if st["orphan_joints"] or st["duplicate_joints"]:
        print(f"handos label: {st['orphan_joints']} joints had no hand box and {st['duplicate_joints']} were duplicates; "
              "those were left out", file=sys.stderr)
    return 0


def write_json(path: str, obj: Any) -> None:
    """Write JSON atomically (temp file, then rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(p.suffix + ".tmp")
    tmp.write_text(json.dumps(obj), encoding="utf-8")
    tmp.replace(p)


def main(argv: list[str]) -> int:
    """Push (or export); returns 0 on success, 1 when some images could not be read."""
    from annotate import push

    args = build_parser().parse_args(argv)
    api_key = os.environ.get("LABEL_STUDIO_API_KEY")
    if args.export and args.from_file:
        return run_export(args, read_export(args.from_file))
    if not args.project:
        raise InputError("--project NAME is required (a title of 3+ characters, or a numeric id)")
    url = push.normalize_url(args.ls_url or "")
    if args.export:
        if args.inputs:
            raise InputError("--export takes no INPUT; it reads the project")
        client = push.connect(url, api_key)
        project_id = push.find_or_create_project(client, args.project, create=False)
        from annotate.backend import ImageFetcher  # sizes of images known nowhere else: media paths only

        fetcher = ImageFetcher(ls_url=url, api_key=api_key,
                               local_root=Path(args.local_files_root) if args.local_files_root else None)
        return run_export(args, push.export_tasks(client, project_id), fetch=fetcher.fetch)
    if not args.inputs:
        raise InputError("give images, folders or prediction files to push (or --export OUT.json)")
    if args.batch_size < 1:
        raise InputError("--batch-size must be >= 1")
    if args.local_files and not args.local_files_root:
        raise InputError("--local-files needs --local-files-root (the server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)")
    predicted, to_predict = gather(args.inputs, args.image_root)
    client = push.connect(url, api_key)  # fail fast on a wrong key or a server that is down
    project_id = push.find_or_create_project(client, args.project, create=args.create)
    state = Path(args.state) if args.state else default_state(url, args.project)
    state.mkdir(parents=True, exist_ok=True)
    if to_predict:
        predicted += predict_missing(to_predict, state, args.weights, args.device, args.quiet,
                                     batch_size=args.predict_batch_size, workers=args.workers, recall=args.recall,
                                     runtime=args.runtime)
    items = [push.PushItem(record=r, image=str(img)) for r, img in predicted]
    if not items:
        raise InputError("nothing to push: no image could be read")
    from tqdm import tqdm

    with tqdm(total=len(items), unit="task", desc="push", disable=args.quiet, dynamic_ncols=True) as bar:
        def advance(n: int) -> None:
            bar.update(n)

        uploads = push.UploadCache(state / f"uploads-project{project_id}.jsonl")
        result = push.push_items(client, project_id, items, batch_size=args.batch_size,
                                 local_files_root=args.local_files_root if args.local_files else None,
                                 uploads=uploads, on_batch=advance)
        bar.update(bar.total - bar.n)
    print(f"handos label: {len(items)} images in project {args.project!r} (id {project_id}): {result.created} new tasks, "
          f"{result.skipped} already there -> {result.project_url}", file=sys.stderr)
    failed = (state / "predictions.jsonl.errors.jsonl")
    return 1 if to_predict and failed.exists() and failed.stat().st_size else 0

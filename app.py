"""handos demo: `python app.py [--host H] [--port P] [--device auto|cpu|cuda] [--weights DIR]` (also the Hugging Face Space entry)."""
from __future__ import annotations

import argparse
import os
import sys

from handos.foundation import RUNTIME_HELP, RUNTIMES


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; host and port also come from GRADIO_SERVER_NAME / GRADIO_SERVER_PORT."""
    p = argparse.ArgumentParser(description="handos Gradio demo")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                   help="address to bind (default 127.0.0.1, loopback only; 0.0.0.0 serves the network)")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), help="port (default 7860)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default=os.environ.get("HANDOS_DEVICE", "auto"),
                   help="default device shown in the UI (auto: CUDA when present)")
    p.add_argument("--max-file-size", default=os.environ.get("HANDOS_DEMO_MAX_FILE_SIZE", "50mb"), help="upload limit, e.g. 50mb")
    p.add_argument("--preload", action="store_true", help="load the model before serving (first request is faster)")
    p.add_argument("--runtime", choices=RUNTIMES, default=os.environ.get("HANDOS_RUNTIME", "auto"), help=RUNTIME_HELP)
    p.add_argument("--weights", default=os.environ.get("HANDOS_WEIGHTS"),
                   help="weights folder (e.g. from handos train --finetune), file or Hub repo id; default: shipped")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Build the demo and serve it until interrupted."""
    args = parse_args(argv)
    if args.weights:  # handos.load() reads it (every model the demo loads)
        os.environ["HANDOS_WEIGHTS"] = str(args.weights)
    os.environ["HANDOS_RUNTIME"] = args.runtime  # likewise
    from demo.config import DemoConfig
    from demo.layout import build_demo

    cfg = DemoConfig(max_file_size=args.max_file_size, default_device=args.device)
    import torch

    torch.set_num_threads(cfg.torch_threads)
    demo = build_demo(cfg=cfg, preload=args.preload)
    demo.queue(default_concurrency_limit=cfg.image_concurrency, max_size=cfg.queue_max_size)
    demo.launch(server_name=args.host, server_port=args.port, max_file_size=cfg.max_file_size,
                show_error=False, ssr_mode=False, footer_links=["api"], quiet=False,
                run_history=False)  # run history would keep inputs (the Label Studio key) in the browser
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`python app.py`: the huvi browser app (Gradio 6).

Categories live in $HUVI_HOME (default ./data; the demo category is copied in when missing), run
folders in $HUVI_RUNS (default: `runs` beside HUVI_HOME). Training runs as a separate
`python -m huvi train` process, so it survives a closed page or a restarted app.
"""

from __future__ import annotations

import argparse
import logging
import os


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python app.py", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), help="address to listen on (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")), help="port (default 7860)")
    parser.add_argument("--share", action="store_true", help="also serve through a public gradio.live link (off by default)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    # After parsing, so that --help answers without loading torch and gradio. The CLI's logging setup
    # comes first (importing huvi quiets bitsandbytes' optional-kernel warning), so the app's log is
    # as quiet as every training job's.
    from huvi.cli import setup_logging

    setup_logging(verbose=False)
    from huvi.catalogue import choose_preset
    from huvi.jobs import Jobs
    from huvi.workspace import MAX_CLIP_BYTES, Workspace
    from ui.app import CSS, THEME, build_app
    from ui.common import Context

    log = logging.getLogger("huvi")
    workspace = Workspace.from_env()
    workspace.prepare()
    preset = choose_preset()
    log.info("categories in %s, runs in %s, preset %s (%s)", workspace.categories, workspace.runs, preset.name, preset.reason)
    demo = build_app(Context(workspace, Jobs(workspace.runs), preset))
    demo.queue(default_concurrency_limit=1)
    demo.launch(
        server_name=args.host,
        server_port=args.port,
        share=args.share,
        allowed_paths=[str(workspace.categories), str(workspace.runs)],
        max_file_size=MAX_CLIP_BYTES,  # add_clip's own limit: Gradio stops a larger upload as it arrives
        theme=THEME,
        css=CSS,
        quiet=True,  # Gradio's own start lines advise `share=True`; this app's flag is --share (below)
        prevent_thread_lock=True,
    )
    public = f" and {demo.share_url}" if demo.share_url else " (add --share for a public gradio.live link)"
    log.info("serving on %s%s; Ctrl-C stops the app (training jobs keep running)", demo.local_url, public)
    demo.block_thread()


if __name__ == "__main__":
    main()

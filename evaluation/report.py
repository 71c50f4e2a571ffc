"""The results table: printed, and sent to the configured experiment loggers."""

from omegaconf import DictConfig
from rich.console import Console
from rich.table import Table

# ---------------------------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------------------------


def _columns(results: dict[str, dict]) -> list[str]:
    cols: list[str] = []
    for row in results.values():
        cols += [k for k in row if k != "images" and k not in cols]
    return cols


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.4f}"


def print_table(results: dict[str, dict], title: str, notes: list[str] = ()) -> None:
    table = Table(title=title)
    table.add_column("row", no_wrap=True)
    table.add_column("images", justify="right")
    cols = _columns(results)
    headers = [k.replace("_", "-").upper() for k in cols]
    for h in headers:
        table.add_column(h, justify="right", no_wrap=True)
    for name, row in results.items():
        table.add_row(name, str(row["images"]), *(_fmt(row.get(k)) for k in cols))
    # Wide enough for every column even when stdout is not a terminal (rich assumes 80 columns there).
    needed = max([len("row"), *map(len, results)]) + 10 + sum(max(len(h), 10) + 3 for h in headers)
    console = Console()
    if console.width < needed:
        console = Console(width=needed)
    console.print(table)
    for note in notes:
        console.print(f"note: {note}")


def log_to_loggers(cfg: DictConfig, results: dict[str, dict], title: str) -> None:
    """Send the table to the configured experiment loggers (``logger=wandb``: a wandb.Table ``eval/metrics``)."""
    if not cfg.get("logger"):
        return
    from pytorch_lightning.loggers import WandbLogger

    from runtime.loggers import instantiate_loggers

    loggers = instantiate_loggers(cfg.logger)
    if not loggers:
        return
    cols = _columns(results)
    data = [[name, row["images"], *(row.get(k) for k in cols)] for name, row in results.items()]
    flat = {f"eval/{name}/{k}": v for name, row in results.items() for k, v in row.items() if v is not None}
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            lg.log_table(key="eval/metrics", columns=["row", "images", *cols], data=data)
            lg.experiment.summary["eval/title"] = title
        else:
            lg.log_metrics(flat)
        lg.finalize("success")
    if any(isinstance(lg, WandbLogger) for lg in loggers):
        import wandb

        wandb.finish()

"""What a notebook wants from a lake: pandas views of manifests and run records, DuckDB and Spark views of a
table, and an HTML grid of its images::

    from laion5b_spark.notebook import summary, run_history, to_duckdb, to_spark, show_images

This module imports ``laion5b_spark.lake``, never the reverse: jobs never pay for pandas, DuckDB or IPython.
Manifests are read through ``Table`` methods (``all_entries``, ``runs``, ``updated``) and every view reads the
files a table's manifest lists, through ``Table.files()`` / ``Table.dataset()``, never a folder listing: a
crashed run's leftovers stay invisible here too.
"""

from __future__ import annotations

import base64
import html
import io

import pyarrow as pa
import pyarrow.compute as pc

from .lake import Lake, Table

__all__ = ["summary", "run_history", "to_duckdb", "to_spark", "show_images", "HtmlView"]

# columns too heavy to read for choosing rows; the image bytes are fetched afterwards for the chosen rows only
_HEAVY = {"jpg", "image_embedding", "text_embedding", "exif"}
# what a caption shows by default, when the rows have it (``score``: a knn search's)
_CAPTION_COLUMNS = ("score", "similarity", "punsafe", "pwatermark", "width", "height", "language")


# -- manifests and run records as DataFrames ------------------------------------------------------------
def summary(lake: Lake):
    """A pandas DataFrame, one row per table: rows, files, MB, runs, last updated (from the manifests)."""
    import pandas as pd

    rows = []
    for name in lake.tables():
        t = lake.table(name)
        units = t.all_entries()
        files = [e for e in units if e.path]
        runs = t.runs()
        rows.append({"table": name, "rows": sum(e.rows for e in units), "files": len(files),
                     "units": len(units), "MB": round(sum(e.bytes for e in files) / 1e6, 3),
                     "runs": len(runs), "last_run": runs[-1] if runs else None,
                     "updated": pd.to_datetime(t.updated(), utc=True)})
    cols = ["table", "rows", "files", "units", "MB", "runs", "last_run", "updated"]
    return pd.DataFrame(rows, columns=cols)


def run_history(lake: Lake, job: str | None = None):
    """A pandas DataFrame of run records (all jobs, or one): status, times, rows in/out per ledger
    (``<ledger>.rows_in`` / ``<ledger>.rows_out`` columns for each ledger seen)."""
    import pandas as pd

    rows = []
    for name in [job] if job else lake.jobs():
        for r in lake.runs(name):
            row = {"job": r.get("job", name), "run_id": r.get("run_id"), "status": r.get("status"),
                   "table": r.get("table"), "started": r.get("started"), "ended": r.get("ended"),
                   "seconds": r.get("seconds"), "table_rows": r.get("table_rows")}
            for ledger, c in (r.get("counts") or {}).items():
                row[f"{ledger}.rows_in"] = c.get("rows_in")
                row[f"{ledger}.rows_out"] = c.get("rows_out")
            rows.append(row)
    fixed = ["job", "run_id", "status", "table", "started", "ended", "seconds", "table_rows"]
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=fixed)
    for c in ("started", "ended"):
        df[c] = pd.to_datetime(df[c], utc=True)
    # a record without "seconds" (a run still going, or killed) gets it from its times when it has an end
    df["seconds"] = df["seconds"].fillna((df["ended"] - df["started"]).dt.total_seconds())
    ledgers = sorted(c for c in df.columns if c not in fixed)
    for c in ledgers + ["table_rows"]:
        df[c] = df[c].astype("Int64")  # NaN where a job has no such ledger; counts stay integers
    return df[fixed + ledgers].sort_values(["started", "run_id"], kind="stable").reset_index(drop=True)


# -- a table as DuckDB / Spark ---------------------------------------------------------------------------
def to_duckdb(table: Table, con=None):
    """A DuckDB relation over the listed files (on ``con``, else DuckDB's default connection). Local lakes:
    DuckDB reads the parquet files itself; other lakes: DuckDB scans the pyarrow dataset (its fsspec
    filesystem), with projection and filter pushdown."""
    import duckdb

    con = con if con is not None else duckdb.default_connection()
    files = table.files()
    if not files:
        return con.from_arrow(table.to_arrow())
    if table.lake.is_local:
        return con.read_parquet(files)
    # DuckDB's own s3 reader would need httpfs and its own credentials; the lake's fsspec filesystem has both
    return con.from_arrow(table.dataset())


def to_spark(table: Table, spark):
    """A Spark DataFrame of the listed files only (``spark.read.parquet`` on a local lake, fsspec reads in
    ``mapInArrow`` tasks on other lakes, as Spark has no s3a here)."""
    from pyspark.sql.pandas.types import from_arrow_schema

    files = table.files()
    if not files:
        empty = table.to_arrow()
        return spark.createDataFrame([], from_arrow_schema(_spark_arrow_schema(empty.schema)))
    schema = table.dataset().schema
    spark_schema = _spark_arrow_schema(schema)
    if table.lake.is_local and spark_schema.equals(schema):
        return spark.read.parquet(*files)
    # other lakes (no s3a jars here), and files Spark's parquet reader refuses (float16 embeddings): one task
    # per file reads it through fsspec and pyarrow
    ref, target = table.lake.ref, spark_schema

    def read(batches):
        lake = ref.open()
        import pyarrow.parquet as pq

        for batch in batches:
            for path in batch.column(0).to_pylist():
                with lake.fs.open(path, "rb") as f:
                    for b in pq.ParquetFile(f).iter_batches(batch_size=4096):
                        yield from pa.Table.from_batches([b]).cast(target).to_batches()

    paths = spark.createDataFrame(spark.sparkContext.parallelize([(p,) for p in files], len(files)), "path string")
    return paths.mapInArrow(read, from_arrow_schema(target))


def _spark_arrow_schema(schema: pa.Schema) -> pa.Schema:
    """The schema Spark can hold: float16 (embeddings) widened to float32."""
    def widen(t: pa.DataType) -> pa.DataType:
        if pa.types.is_float16(t):
            return pa.float32()
        if pa.types.is_list(t):
            return pa.list_(widen(t.value_type))
        return t

    return pa.schema([pa.field(f.name, widen(f.type), f.nullable) for f in schema])


# -- images --------------------------------------------------------------------------------------------
class HtmlView:
    """What ``show_images`` returns outside IPython: the HTML, displayable by anything that knows _repr_html_."""

    def __init__(self, data: str):
        self.data = data

    def _repr_html_(self) -> str:
        return self.data


def show_images(source, n: int = 16, where=None, columns: list[str] | None = None, *,
                uids: list[int] | None = None, lake: Lake | None = None, thumb: int = 160):
    """Render up to ``n`` rows as a grid of thumbnails with their text and scores.

    ``source``: a Lake (its ``dataset`` table), a Table, or a pandas DataFrame with a ``uid`` column (then
    ``lake`` says where the images are). ``where``: a pandas query string, applied to the rows without their
    heavy columns, or a pyarrow compute expression, pushed down to the parquet scan (tables only).
    ``uids``: only these rows, shown in this order (e.g. a knn search's hits). ``columns``: what the caption
    shows under the text (default: the scores and sizes the rows have). Thumbnails are base64 JPEGs inline,
    so the HTML stands alone; image bytes come from ``images``, joined on ``uid``.
    """
    rows, lake, name = _choose_rows(source, n, where, uids, lake)
    images = _image_rows(lake, name, rows)
    shown = [c for c in (columns if columns is not None else _CAPTION_COLUMNS) if c in rows.columns]
    cells = []
    for rec in rows.to_dict("records"):
        img = images.get(rec["uid"], {})
        for c in ("url", "text"):
            if rec.get(c) is None and img.get(c) is not None:
                rec[c] = img[c]
        cells.append(_cell(rec, img, shown, thumb))
    what = f"{len(rows)} row(s) of {name}" + (f" where {where}" if where is not None else "")
    page = (f'<div class="l5s-images"><div style="font:12px sans-serif;margin:4px 0">{html.escape(what)}</div>'
            f'<div style="display:grid;grid-template-columns:repeat(auto-fill,minmax({thumb + 20}px,1fr));'
            f'gap:8px">{"".join(cells)}</div></div>')
    try:
        from IPython.display import HTML
    except ImportError:
        return HtmlView(page)
    return HTML(page)


def _choose_rows(source, n, where, uids, lake):
    """The rows to show (pandas, light columns only), the lake holding their images, and a name for them."""
    import pandas as pd

    if isinstance(source, Lake):
        source = source.table("dataset")
    if isinstance(source, Table):
        table, lake, name = source, source.lake, source.name
        light = [c for c in _schema_names(table) if c not in _HEAVY]
        expr = where if isinstance(where, pc.Expression) else None
        if uids is not None:
            picked = pc.field("uid").isin(pa.array(list(uids), pa.int64()))
            expr = picked if expr is None else expr & picked
        if not table.files():
            df = table.to_arrow(light).to_pandas()
        elif expr is None and where is None:
            df = table.dataset().head(n, columns=light).to_pandas()  # no filter: read just n rows
        else:
            df = table.to_arrow(light, filter=expr).to_pandas()
    elif isinstance(source, pd.DataFrame):
        if lake is None:
            raise ValueError("show_images(DataFrame): give lake=... (where the rows' images are)")
        if isinstance(where, pc.Expression):
            raise TypeError("show_images(DataFrame): where must be a pandas query string")
        df, name = source.drop(columns=[c for c in _HEAVY if c in source.columns]), "rows"
        if uids is not None:
            df = df[df["uid"].isin(list(uids))]
    else:
        raise TypeError(f"show_images: expected a Lake, a Table or a pandas DataFrame, got {type(source).__name__}")
    if "uid" not in df.columns:
        raise ValueError(f"show_images: {name} has no uid column to find the images by")
    if isinstance(where, str):
        df = df.query(where)
    if uids is not None:
        order = {u: i for i, u in enumerate(uids)}
        df = df.assign(_order=df["uid"].map(order)).sort_values("_order", kind="stable").drop(columns="_order")
    return df.head(n).reset_index(drop=True), lake, name


def _schema_names(table: Table) -> list[str]:
    if table.files():
        return table.dataset().schema.names
    return table.to_arrow().schema.names


def _image_rows(lake: Lake, name: str, rows) -> dict[int, dict]:
    """uid -> {jpg, url, text, status, reason} from ``images`` for the chosen rows (empty when none)."""
    images = lake.table("images")
    if rows.empty or not images.files():
        return {}
    names = images.dataset().schema.names
    wanted = [c for c in ("uid", "jpg", "url", "text", "status", "reason") if c in names]
    got = images.to_arrow(wanted, filter=pc.field("uid").isin(pa.array(rows["uid"].tolist(), pa.int64())))
    out: dict[int, dict] = {}
    for rec in got.to_pylist():
        out.setdefault(rec["uid"], rec)  # one images row per uid; the first if a lake ever holds two
    return out


def _cell(rec: dict, img: dict, shown: list[str], thumb: int) -> str:
    text = str(rec.get("text") or "")
    caption = html.escape(text[:160] + ("…" if len(text) > 160 else ""))
    scores = " · ".join(f"{c} {_fmt(rec[c])}" for c in shown if not _missing(rec.get(c)))
    uri = _thumbnail(img.get("jpg"), thumb)
    if uri:
        picture = f'<img src="{uri}" alt="{html.escape(text[:80])}" style="max-width:{thumb}px;max-height:{thumb}px">'
    else:
        why = img.get("reason") or ("image does not decode" if img.get("jpg") else "no image in images")
        picture = (f'<div style="width:{thumb}px;height:{thumb}px;background:#eee;display:flex;align-items:center;'
                   f'justify-content:center;font:11px sans-serif;color:#777">{html.escape(str(why))}</div>')
    url = rec.get("url")
    link = f' <a href="{html.escape(url)}" target="_blank">link</a>' if url else ""
    return (f'<figure style="margin:0;font:11px sans-serif" title="uid {rec["uid"]}">{picture}'
            f'<figcaption>{caption}<br><span style="color:#555">{html.escape(scores)}</span>{link}</figcaption>'
            f'</figure>')


def _missing(v) -> bool:
    """None, or pandas' NaN for a null (punsafe without an NSFW head): left out of the caption."""
    return v is None or (isinstance(v, float) and v != v)


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.3f}"
    return str(v)


def _thumbnail(data: bytes | None, size: int) -> str | None:
    if not data:
        return None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            im = im.convert("RGB")
            im.thumbnail((size, size))
            buf = io.BytesIO()
            im.save(buf, "JPEG", quality=85)
    except Exception:  # noqa: BLE001 - a broken image is shown as such, never breaks the grid
        return None
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


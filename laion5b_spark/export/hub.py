"""``--push-to-hub REPO``: the release folder to a Hugging Face dataset repository (the one network call of the
export; tests replace ``upload``)."""

from __future__ import annotations

from ..config import ConfigError

# what the hub gets: the card, the shard lists, the shards and the LAION parquet (not the lake's own files)
PATTERNS = ["README.md", "webdataset.json", "webdataset/**", "laion/**"]


def check_repo_id(repo: str) -> str:
    """``user/name`` or ``org/name``: a bad id stops the run before any work, in one line."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(repo)
    except HFValidationError as exc:
        raise ConfigError(f"--push-to-hub {repo!r}: {str(exc).splitlines()[0]}") from None
    return repo


def upload(folder: str, repo: str, private: bool = False) -> str:
    """Create the dataset repository if needed and upload the release folder; the commit's URL."""
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
    info = api.upload_folder(repo_id=repo, folder_path=folder, repo_type="dataset", allow_patterns=PATTERNS,
                             commit_message="release exported by laion5b-spark jobs/export.py")
    return str(getattr(info, "commit_url", info))

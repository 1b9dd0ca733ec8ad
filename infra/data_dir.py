"""The data dir, owner-only: what the platform keeps there (the logs, the keys, ClickHouse) is for its user alone."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

from infra.config import ConfigError, Settings

log = logging.getLogger(__name__)

OPEN_BITS = 0o077  # group and other: read, write, execute


def secure_data_dir(settings: Settings) -> Path:
    """Create the data dir mode 0700 (or make an existing one so), and set this process's umask to 0o077.

    From then on every file this process (and the processes it starts) creates is owner-only. A data dir
    found open to group or others (made before this, or restored from a backup) also has its files
    tightened to owner-only (0600 for a 0644 file) and its directories to 0700; a dir already 0700 is
    not walked again, as nothing in it is reachable by others. Symbolic links are not followed.
    """
    os.umask(0o077)
    path = settings.data_dir
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except (FileExistsError, NotADirectoryError):
        raise ConfigError(f"CDP_DATA_DIR={str(path)!r}: a file is in the way of that directory; set CDP_DATA_DIR to "
                          "a directory (it is created if missing)") from None  # fmt: skip
    except PermissionError:
        raise ConfigError(f"CDP_DATA_DIR={str(path)!r} cannot be created: this user may not write its parent; set "
                          "CDP_DATA_DIR to a directory it may write, or make the parent writable") from None  # fmt: skip
    except OSError as exc:
        raise ConfigError(f"CDP_DATA_DIR={str(path)!r} cannot be created ({exc.strerror}); set CDP_DATA_DIR to a "
                          "directory on a writable file system") from None  # fmt: skip
    mode = stat.S_IMODE(path.stat().st_mode)
    if not os.access(path, os.R_OK | os.W_OK | os.X_OK):
        raise ConfigError(f"CDP_DATA_DIR={str(path)!r} is not readable and writable by this user (mode "
                          f"{mode:o}, owner uid {path.stat().st_uid}); run cdp as its owner, or set CDP_DATA_DIR to "
                          "a directory of this user's")  # fmt: skip
    if mode & OPEN_BITS or mode & 0o700 != 0o700:
        try:
            os.chmod(path, 0o700)
        except PermissionError:
            raise ConfigError(f"CDP_DATA_DIR={str(path)!r} is open to other users (mode {mode:o}) and belongs to "
                              "another user, so it cannot be made owner-only; run cdp as its owner, or set "
                              "CDP_DATA_DIR to a directory of this user's") from None  # fmt: skip
        tightened = _tighten(path)
        if tightened:
            log.warning("made %d entries under %s owner-only (they were open to group or others)", tightened, path)
    return path


def _tighten(root: Path) -> int:
    count = 0
    for parent, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            entry = os.path.join(parent, name)
            try:
                info = os.lstat(entry)
                if stat.S_ISLNK(info.st_mode):
                    continue
                mode = stat.S_IMODE(info.st_mode)
                wanted = (mode | 0o700 if stat.S_ISDIR(info.st_mode) else mode) & ~OPEN_BITS
                if wanted != mode:
                    os.chmod(entry, wanted)
                    count += 1
            except FileNotFoundError:  # removed meanwhile (a process beside this one)
                continue
            except PermissionError:
                log.warning("cannot make %s owner-only: it belongs to another user", entry)
    return count

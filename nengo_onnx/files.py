"""Writing files so that nothing a user saved is ever lost or half-written.

Standard library only. (The standalone runner of exported models,
`nengo_onnx.exporting.runner`, imports nothing from nengo-onnx, so it writes its
output file through a temporary file and a rename of its own.)
"""

import glob
import os
import tempfile
import time

#: Prefix and suffix of the temporary files `write_atomically` renames into place.
TMP_PREFIX = ".tmp_nengo_onnx_"
TMP_SUFFIX = ".partial"
#: Temporary files older than this were left by a killed write: removed on the next one.
STALE_SECONDS = 3600


def _mode_for(path):
    """The permission bits a new file at ``path`` gets: an existing file's, else the umask's."""
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def remove_stale_partials(directory):
    """Remove temporary files of ours that a killed write left in ``directory``."""
    now = time.time()
    for path in glob.glob(os.path.join(glob.escape(directory), TMP_PREFIX + "*" + TMP_SUFFIX)):
        try:
            if now - os.path.getmtime(path) > STALE_SECONDS:
                os.remove(path)
        except OSError:
            pass  # another process's write finished or removed it first


def write_atomically(path, write):
    """Call ``write(file)`` on a temporary file beside ``path``, then rename it to ``path``.

    A reader never sees a half-written file, and a failed write leaves any old
    file as it was. The file gets the permissions an ordinary write would give
    it (those of the file it replaces, else the umask's), and temporary files
    that earlier, killed writes left behind are cleaned up.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path}: directory {directory} does not exist")
    remove_stale_partials(directory)
    mode = _mode_for(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=TMP_PREFIX, suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise

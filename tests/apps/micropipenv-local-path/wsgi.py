from importlib.metadata import PackageNotFoundError, version

import localapp

try:
    INSTALLED = version("localapp")  # only if the lock's path entry was installed
except PackageNotFoundError:
    INSTALLED = "no"


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{localapp.NAME}: localapp={INSTALLED} from the lock's local path\n".encode()]

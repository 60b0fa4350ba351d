"""Imports what was compiled against the builder's libraries, and says so."""

import enchant
import kerberos
import MySQLdb


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    body = (
        f"native-sdists: kerberos={callable(kerberos.authGSSClientInit)}"
        f" mysqlclient={MySQLdb.version_info[0]} enchant={enchant.get_enchant_version()}\n"
    )
    return [body.encode()]

# Importable only when the project was installed: the package lives under src/.
from cfgapp import application  # noqa: F401

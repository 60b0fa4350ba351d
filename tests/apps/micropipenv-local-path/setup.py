from setuptools import setup

setup(name="localapp", version="1.0", py_modules=["localapp"])

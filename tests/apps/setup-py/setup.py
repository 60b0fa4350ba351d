from setuptools import setup

setup(
    name="setuppyapp",
    version="1.0",
    py_modules=["setuppyapp"],
    install_requires=["gunicorn"],
)

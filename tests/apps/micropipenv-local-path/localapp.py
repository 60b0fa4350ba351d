NAME = "micropipenv-local-path"

"""The command line: one module per verb (argparse + calls into the library), dispatched by `handos.__main__`."""

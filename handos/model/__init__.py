"""The HandOS decoder (`handos.model.decoder`) and the pipeline behind `handos.load()` (`handos.model.pipeline`).

    from handos.model.decoder import HandOSDecoder, DecoderConfig, load_decoder, decoder_inputs_from_foundation
"""

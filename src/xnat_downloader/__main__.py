from xnat_downloader.cli.main import console

console()

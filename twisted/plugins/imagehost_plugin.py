from twisted.application.service import ServiceMaker

imagehost = ServiceMaker(
    "imagehost", "imagehost.tap", "A self-hosted image host (HTTP API and image delivery).", "imagehost"
)
